r"""Entry point for training and evaluation: parses flags and hands over, nothing else.

  ffjax train --config configs/default.py --workdir /tmp/run [--config.batch_size=64 ...]
  ffjax eval  --config configs/default.py --workdir /tmp/run --split test [--checkpoint best]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ffjax import cpu_malloc

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, reports.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and validate), or only evaluate a checkpoint.")
flags.DEFINE_string("split", "test", "eval mode: the split to evaluate.")
flags.DEFINE_string("checkpoint", "latest", "eval mode: 'latest', 'best', or a step number.")
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    if FLAGS.mode == "train":
        from ffjax import train

        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        from ffjax import evaluate

        evaluate.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, split=FLAGS.split, checkpoint=FLAGS.checkpoint)


def run(argv=None, mode: str | None = None):
    if mode is not None:
        argv = list(argv) + [f"--mode={mode}"]
    app.run(main, argv=argv)


if __name__ == "__main__":
    cpu_malloc.reexec_if_needed()
    run()
