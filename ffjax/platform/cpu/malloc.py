"""glibc malloc settings for XLA:CPU, applied by re-running the command before JAX starts.

XLA:CPU takes each step's temporary buffers from malloc and frees them when the step ends
(several GB per xception_cls train step at batch 8, 299 px). glibc hands out blocks that
large as fresh mmap'd pages and unmaps them on free, so every step page-faults and zeroes
its whole working set again: 3.6 s of kernel time in a 6.7 s step, measured on the 2-core
VM of docs/performance.md. Keeping freed memory in the heap (no mmap for large blocks, no
trimming), at most two malloc arenas and transparent huge pages for the heap removes that
(0.01-0.09 s of kernel time; that step took 4.8 s).

glibc reads these settings (GLIBC_TUNABLES) only when a process starts, so the one console
entry (`ffjax <command>`, also `python -m ffjax <command>`: `ffjax.cli.main`) calls
`reexec_if_needed()` first: it re-runs the same command line once with the settings added.
Library code and tests never re-execute. It does nothing when JAX would not run on the CPU
(a JAX accelerator plugin is installed, found as JAX itself finds them, or JAX_PLATFORMS
names another platform), off glibc, when FFJAX_TUNE_MALLOC=0, or when the settings are
already in place. The process then keeps its peak memory until it exits instead of
returning it to the system between steps.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Mapping

SWITCH = "FFJAX_TUNE_MALLOC"  # set to 0 to keep glibc's defaults
MARKER = "FFJAX_MALLOC_TUNED"  # set in the re-run process so it does not re-run again
TUNABLES = (
    ("glibc.malloc.arena_max", "2"),  # 1 also works; compiles took 17.5 vs 12.4 s (2 threads)
    ("glibc.malloc.mmap_max", "0"),
    ("glibc.malloc.trim_threshold", str(1 << 40)),
    ("glibc.malloc.hugetlb", "1"),  # madvise'd transparent huge pages (glibc >= 2.35)
)
def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    if name != "glibc":
        return None
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def accelerator_installed() -> bool:
    """Whether JAX would find a GPU/TPU backend, without importing JAX.

    The rule JAX's own plugin discovery follows (jax/_src/xla_bridge.py): a module in the
    `jax_plugins` namespace package or an entry point in the `jax_plugins` group (the CUDA
    and ROCm plugins, and any other PJRT plugin), or the `libtpu` package for TPUs.
    """
    if importlib.util.find_spec("libtpu") is not None:
        return True
    if importlib.metadata.entry_points(group="jax_plugins"):
        return True
    spec = importlib.util.find_spec("jax_plugins")
    return spec is not None and any(pkgutil.iter_modules(spec.submodule_search_locations or []))


def tuned_environ(
    environ: Mapping[str, str],
    glibc: tuple[int, int] | None,
    accelerator_installed: bool,
) -> dict[str, str] | None:
    """The environment to re-run with, or None when the current one should be kept.

    Args:
      environ: the current environment.
      glibc: the glibc version (None: another C library, where the settings do not exist).
      accelerator_installed: a JAX GPU/TPU plugin is installed (`accelerator_installed()`).

    Returns:
      A copy of `environ` with the settings appended to GLIBC_TUNABLES (a tunable the user
      set keeps the user's value) and MARKER set, or None.
    """
    if environ.get(MARKER) or environ.get(SWITCH, "1") == "0" or glibc is None or glibc < (2, 26):
        return None
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms[:1] not in ([], ["cpu"]) or (not platforms and accelerator_installed):
        return None
    current = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    user_set = {t.split("=", 1)[0] for t in current}
    added = [f"{k}={v}" for k, v in TUNABLES if k not in user_set and (k != "glibc.malloc.hugetlb" or glibc >= (2, 35))]
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(current + added)
    env[MARKER] = "1"
    return env


def reexec_if_needed() -> None:
    """Re-runs this process's command line with `tuned_environ` when it applies.

    Call it first thing in a program's entry point, never from library code or tests: the
    process is replaced (`os.execve`), so nothing done before the call survives.
    """
    if sys.platform != "linux" or not getattr(sys, "orig_argv", None):
        return
    env = tuned_environ(os.environ, glibc_version(), accelerator_installed())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
