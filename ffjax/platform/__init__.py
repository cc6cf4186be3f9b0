"""What differs by platform, decided once from the devices a step runs on.

- `selection`: which operation set the models get (`config.cpu_ops`) and the XLA compile
  options of ffjax's jitted steps, both from the mesh's devices.
- `cpu/`: what makes XLA:CPU fast: the operation formulations (`ops`), the native C++
  kernels and their build (`kernels`), the compile options (`xla_options`) and the glibc
  malloc settings the console entry applies (`malloc`).

Importing this package imports no JAX (the console entry reads `cpu.malloc` before JAX starts).
"""
