r"""`ffjax bench`: train/eval step throughput, scaling, FLOP utilisation and input speed.

  ffjax bench --config configs/default.py --image_size 256 --batch_sizes 8 --devices 1,8
  ffjax bench --suite torch_reference --devices 1 --jsonl results.jsonl   # beside PyTorch

Modules: `steps` times the project's compiled steps on synthetic device-resident batches,
`input` the input pipeline, `profile` splits a step's time over its XLA operations,
`report` derives MFU and scaling and formats the results, `suites` holds named case sets,
`cli` the flags. Importing this package imports no JAX. Results: docs/performance.md.
"""

from __future__ import annotations

from typing import Any


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `ffjax bench` (see `ffjax.bench.cli.run`)."""
    from ffjax.bench import cli

    return cli.run(argv)
