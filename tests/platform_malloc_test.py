"""Tests for ffjax.platform.cpu.malloc: when the malloc settings apply, and the one re-run."""

import os
import subprocess
import sys

import pytest

from ffjax.platform.cpu import malloc as cpu_malloc

GLIBC = (2, 36)


def test_applies_on_cpu_and_keeps_the_users_tunables():
    env = cpu_malloc.tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4", "PATH": "/bin"}, GLIBC, False)
    tunables = env["GLIBC_TUNABLES"].split(":")
    assert tunables[0] == "glibc.malloc.arena_max=4"  # the user's value wins
    assert not any(t.startswith("glibc.malloc.arena_max=2") for t in tunables)
    assert {"glibc.malloc.mmap_max=0", "glibc.malloc.hugetlb=1"} <= set(tunables)
    assert env[cpu_malloc.MARKER] == "1" and env["PATH"] == "/bin"


@pytest.mark.parametrize(
    "environ,glibc,accelerator",
    [
        ({cpu_malloc.MARKER: "1"}, GLIBC, False),  # already re-run
        ({cpu_malloc.SWITCH: "0"}, GLIBC, False),  # switched off
        ({}, None, False),  # not glibc
        ({}, GLIBC, True),  # a GPU/TPU plugin is installed and JAX_PLATFORMS is unset
        ({"JAX_PLATFORMS": "cuda"}, GLIBC, False),
        ({"JAX_PLATFORMS": "tpu,cpu"}, GLIBC, True),
    ],
)
def test_does_not_apply(environ, glibc, accelerator):
    assert cpu_malloc.tuned_environ(environ, glibc, accelerator) is None


def test_explicit_cpu_platform_applies_even_with_a_plugin_and_old_glibc_gets_no_hugetlb():
    env = cpu_malloc.tuned_environ({"JAX_PLATFORMS": "cpu"}, (2, 31), True)
    assert "glibc.malloc.mmap_max=0" in env["GLIBC_TUNABLES"]
    assert "hugetlb" not in env["GLIBC_TUNABLES"]


@pytest.mark.skipif(cpu_malloc.glibc_version() is None or sys.platform != "linux", reason="glibc only")
def test_reexec_runs_the_command_once_with_the_settings():
    code = (
        "import os; from ffjax.platform.cpu import malloc as cpu_malloc; cpu_malloc.reexec_if_needed(); "
        "print(os.environ.get('FFJAX_MALLOC_TUNED'), os.environ.get('GLIBC_TUNABLES'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in (cpu_malloc.MARKER, cpu_malloc.SWITCH, "GLIBC_TUNABLES")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout  # printed by the re-run process only
    marker, tunables = lines[0].split(" ", 1)
    assert marker == "1" and "glibc.malloc.mmap_max=0" in tunables
