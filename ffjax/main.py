r"""`ffjax train` and `ffjax eval`: parse flags and hand over, nothing else.

  ffjax train --config default --workdir /tmp/run [--config.batch_size=64 ...]
      exit status 0: reached num_train_steps; 143: stopped by SIGTERM after saving (resumable);
      1: failed (in a multi-process run, on this host or on another one, which the log names)
  ffjax eval  --config default --workdir /tmp/run --split test [--checkpoint best]
  ffjax eval  --config default --workdir /tmp/run --dataset celebdf_v2   # cross-dataset, beside FF++'s test

`--config` takes a packaged config's name (`ffjax/configs/`) or a config file's path.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ffjax import configs, evaluation, failure_watch, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, reports.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and validate), or only evaluate a checkpoint.")
flags.DEFINE_string("split", "test", "eval mode: the split to evaluate.")
flags.DEFINE_string("checkpoint", "latest", "eval mode: 'latest', 'best', or a step number.")
flags.DEFINE_string("dataset", None, "eval mode: another built dataset (celebdf_v2, dfdc): a cross-dataset evaluation.")
flags.DEFINE_string("dataset_config", None, "eval mode: that dataset's build (default: the one with the training crops).")
config_flags.DEFINE_config_file(
    "config", None, f"A packaged config ({', '.join(configs.names())}) or a config file's path.", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    if FLAGS.mode == "train":
        try:
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except train.Preempted as e:
            # Stopped and resumable, not finished: `ffjax train ... && ffjax eval ...`, a
            # shell loop or a Kubernetes Job must not take it for a completed run.
            logging.warning("%s Exit status %d.", e, train.PREEMPTED_EXIT_CODE)
            sys.exit(train.PREEMPTED_EXIT_CODE)
        except Exception as e:
            # Multi-process: leave now; JAX's shutdown barrier at exit would wait for hosts that
            # already stopped. One process: the usual traceback.
            failure_watch.exit_after_failure(e)
            raise
    else:
        evaluation.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, split=FLAGS.split, checkpoint=FLAGS.checkpoint,
                                       dataset=FLAGS.dataset, dataset_config=FLAGS.dataset_config)


def run(argv, mode: str) -> None:
    """`ffjax train|eval ...`: `argv[0]` is the program name, the rest are the flags."""
    try:
        argv = configs.resolve_argv(list(argv))
    except FileNotFoundError as e:
        raise SystemExit(f"{argv[0]}: {e}") from None
    app.run(main, argv=argv + [f"--mode={mode}"])
