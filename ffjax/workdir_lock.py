"""One run per workdir: a lock file naming its holder, refreshed while the run lives.

Two `ffjax train` on one workdir would overwrite each other's checkpoints and `best/`. The
run's process 0 writes `<workdir>/LOCK` (host, pid, start time, heartbeat) and refreshes the
heartbeat from a thread every `HEARTBEAT_S`. A second run stops at once with a message naming
the holder. A lock whose holder is gone does not block a resume: on the same host a dead pid
is stale at once; from another host (a pod resumed on new machines) a heartbeat older than
`STALE_S` is. On a local disk the lock is created atomically (O_EXCL); on a bucket it is
checked and then written (a race of a fraction of a second is left open).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import jax
from jax.experimental import multihost_utils

from ffjax import paths

LOCK_NAME = "LOCK"
HEARTBEAT_S = 30.0
STALE_S = 120.0


class WorkdirInUse(RuntimeError):
    """Another live run holds the workdir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _stale(holder: dict, now: float) -> str | None:
    """Why a lock's holder is gone, or None if it may be alive."""
    if holder.get("host") == socket.gethostname():
        return None if _pid_alive(int(holder.get("pid", -1))) else f"its process {holder.get('pid')} is gone"
    age = now - float(holder.get("heartbeat", 0))
    return f"its heartbeat is {age:.0f} s old" if age > STALE_S else None


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the workdir for this run (all processes call it)."""

    def __init__(self, workdir: str):
        self.path = paths.path(f"{paths.resolve(workdir)}/{LOCK_NAME}")
        self._local = not paths.is_url(str(self.path))
        self._record = None
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "WorkdirLock":
        error = ""
        if jax.process_index() == 0:
            try:
                self._acquire()
            except WorkdirInUse as e:
                error = str(e)
        if jax.process_count() > 1:
            # Every host stops if process 0 could not take the lock (no host may hang waiting).
            held = multihost_utils.broadcast_one_to_all(jax.numpy.int32(0 if error else 1))
            if int(held) == 0 and not error:
                error = f"{self.path}: process 0 found the workdir in use by another run."
        if error:
            raise WorkdirInUse(error)
        return self

    def _acquire(self) -> None:
        now = time.time()
        self._record = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now,
                        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            if self._create():
                break
            try:
                holder = json.loads(self.path.read_text())
            except (OSError, ValueError):
                holder = {}
            why = _stale(holder, now) if holder else "it is unreadable"
            if why is None:
                raise WorkdirInUse(
                    f"{self.path.parent} is in use by another run: host {holder.get('host')}, pid {holder.get('pid')}, "
                    f"started {holder.get('started_utc')}. Wait for it to end, stop it, or use another --workdir "
                    f"(if that run is gone, delete {self.path})."
                )
            logging.warning("Taking over %s: %s (%s).", self.path, why, holder)
            self.path.unlink(missing_ok=True)
        else:
            raise WorkdirInUse(f"{self.path}: another run took the workdir at the same moment.")
        self._thread = threading.Thread(target=self._beat, name="ffjax-workdir-lock", daemon=True)
        self._thread.start()

    def _create(self) -> bool:
        data = json.dumps(self._record).encode()
        if self._local:
            try:
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if self.path.exists():
            return False
        self.path.write_bytes(data)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._record["heartbeat"] = time.time()
            try:
                self.path.write_text(json.dumps(self._record))
            except OSError as e:  # a full disk must not kill training; the lock just ages
                logging.warning("Could not refresh %s: %s", self.path, e)

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            holder = json.loads(self.path.read_text())
            if holder.get("pid") == self._record["pid"] and holder.get("host") == self._record["host"]:
                self.path.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
