"""`ffjax <command> ...`: one console script for every entry point.

Each command lives in its own module with its own flags; this only routes to it. It is also
the one place that applies the glibc malloc settings of `ffjax.platform.cpu.malloc` (by
re-running the command once, before JAX starts; `FFJAX_TUNE_MALLOC=0` keeps glibc's defaults).
"""

from __future__ import annotations

import importlib
import sys

from ffjax.platform.cpu import malloc

COMMANDS = {
    "train": ("ffjax.main", "train", "train (and validate) a model from a config"),
    "eval": ("ffjax.main", "eval", "evaluate a checkpoint on a split"),
    "build-data": ("ffjax.build_data", None, "package a local FF++ copy as a TFDS dataset"),
    "predict": ("ffjax.inference.predict", None, "localise manipulations in your own video or image"),
    "convert": ("ffjax.convert", None, "PyTorch weights (timm, smp, torchvision) into an ffjax model"),
    "demo": ("ffjax.demo", None, "end-to-end demo on real faces that ship with scikit-image"),
    "study": ("ffjax.study", None, "the paper's comparison: train and score every cell of a study, tables and plots"),
    "bench": ("ffjax.bench.cli", None, "train/eval throughput across devices, batches, precisions"),
}


def main(argv: list[str] | None = None) -> None:
    """Routes `argv` (default: the command line, after the malloc re-run) to its command."""
    if argv is None:  # the real command line (not a call from Python): the process is ours
        malloc.reexec_if_needed()
        argv = sys.argv
    if len(argv) < 2 or argv[1] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
        print(f"usage: ffjax <command> [flags]\n\ncommands:\n{lines}\n\n`ffjax <command> --help` lists a command's flags.")
        sys.exit(0 if len(argv) >= 2 and argv[1] in ("-h", "--help") else 2)
    module_name, mode, _ = COMMANDS[argv[1]]
    # Imported by name: each command pulls in only what it needs (`ffjax predict` no grain,
    # `ffjax bench` no JAX before its --num_cpu_devices flag is read).
    module = importlib.import_module(module_name)
    sub_argv = [f"ffjax {argv[1]}"] + argv[2:]
    if mode is None:
        module.run(sub_argv)
    else:
        module.run(sub_argv, mode=mode)


if __name__ == "__main__":
    main()
