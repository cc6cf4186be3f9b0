"""`python -m ffjax.bench ...`: the same as `ffjax bench ...`."""

import sys

from ffjax import cpu_malloc
from ffjax.bench import run

if __name__ == "__main__":
    # The guard matters: grain's input workers are spawned processes that import __main__.
    cpu_malloc.reexec_if_needed()
    run(["ffjax bench"] + sys.argv[1:])
