"""`python -m ffjax <command> ...`: the same as `ffjax <command> ...`."""

from ffjax import cli

# The guard matters: grain's worker processes are spawned and import __main__.
if __name__ == "__main__":
    cli.main()
