r"""`ffjax bench`: train/eval step throughput, scaling, FLOP utilisation and input speed.

  ffjax bench --config default --image_size 256 --batch_sizes 8 --devices 1,8
  ffjax bench --config default --config.cpu_ops=stock   # flax/lax's own operations
  ffjax bench --suite torch_reference --devices 1 --jsonl results.jsonl   # beside PyTorch
  ffjax bench --suite accelerator --devices 1 --out accel.json   # one GPU/TPU chip, bf16 and fp32
  ffjax bench --config default --pipeline_stages   # a training frame's host time, stage by stage
  ffjax bench --config default --fed_step          # the step fed by the pipeline vs resident batches

Modules: `steps` times the project's compiled steps on synthetic device-resident batches,
`input` the input pipeline (`pipeline_stages` stage by stage, `fed_step` under the step),
`augment_grid` draws what the model is fed, `profile` splits a step's time over its XLA operations,
`report` derives MFU and scaling and formats the results, `suites` holds named case sets,
`cli` the flags and the run (`ffjax.bench.cli.run`). Importing this package imports no JAX.
Results: docs/performance.md.
"""
