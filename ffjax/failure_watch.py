"""A multi-process run stops on every host when one host fails, instead of hanging.

Every step is a collective: when one host raises (a corrupt record, a full disk, a bug), the
others wait in the step's all-reduce for a contribution that never comes. JAX's coordination
service would notice the dead host only after its heartbeat timeout (100 s by default), and
only once that host has exited, which its own `jax.distributed.shutdown()` at exit delays by
waiting in a barrier for the hosts it left stuck.

`FailureWatch` closes that gap through the coordination service's key-value store:
- the host that fails writes `FAILED_KEY` (its process index and error) on its way out,
  waits up to `ACK_TIMEOUT_S` for the others to acknowledge, and lets the error propagate;
- every other host polls the key from a daemon thread every `POLL_S` and, once it is set,
  logs which host failed and why, and leaves the process at once with
  `PEER_FAILED_EXIT_CODE` (its main thread may be blocked inside a collective, where no
  Python exception can reach it);
- a host that loses the coordinator itself (process 0 died) for `COORDINATOR_LOST_S` stops
  the same way.

What the hosts lose: the steps since the last checkpoint, as after any crash. A checkpoint
being written asynchronously is abandoned, never half-published (orbax commits a step by
renaming its temporary folder; `Checkpointer` cleans leftovers).

`exit_after_failure` is for the command line: a host that failed exits without JAX's shutdown
barrier, which would wait for hosts that already left.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import jax

FAILED_KEY = "ffjax/failed"
ACK_PREFIX = "ffjax/failed_ack/"
POLL_S = 1.0
ACK_TIMEOUT_S = 10.0
COORDINATOR_LOST_S = 15.0
# The run failed (on another host); 143 stays reserved for "stopped, resumable".
PEER_FAILED_EXIT_CODE = 1


def _client():
    """The coordination service client of `jax.distributed` (None in a single-process run).

    JAX exposes no public handle to the key-value store it already runs; this reads the one
    `jax.distributed.initialize()` created.
    """
    from jax._src import distributed

    return distributed.global_state.client


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first[:500]


class FailureWatch:
    """Context manager around a multi-process run's step loop; nothing in a single process.

    Args:
      poll_s: seconds between two looks at the failure key.
      exit: how a host leaves when another failed (`os._exit`; replaceable in tests).
    """

    def __init__(self, poll_s: float = POLL_S, exit=os._exit):
        self.poll_s, self._exit = poll_s, exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._reported = False

    def __enter__(self) -> FailureWatch:
        if jax.process_count() > 1:
            self._client = _client()
        if self._client is not None:
            self._thread = threading.Thread(target=self._watch, name="ffjax-failure-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._thread is None:
            return False
        if exc is not None:
            self.report(exc)
        self._stop.set()
        self._thread.join()
        return False

    def report(self, error: BaseException) -> None:
        """Tells the other hosts that this one failed, and waits briefly for them to hear it.

        Once per run; nothing in a single process or for an error every host raised together
        (`agreed_by_all_hosts`, e.g. a preemption).
        """
        if self._client is None or self._reported or getattr(error, "agreed_by_all_hosts", False):
            return
        self._reported = True
        self._stop.set()  # this host's own key must not stop it
        me, count = jax.process_index(), jax.process_count()
        message = f"process {me} of {count} failed: {_describe(error)}"
        logging.error("%s; telling the other processes to stop.", message)
        try:
            self._client.key_value_set(FAILED_KEY, message)
        except Exception as e:  # noqa: BLE001 - another host failed first, or the coordinator is gone
            logging.error("Could not tell the other processes (%s).", _describe(e))
            return
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for other in range(count):
            if other == me:
                continue
            left_ms = int(max(deadline - time.monotonic(), 0.0) * 1000)
            try:
                self._client.blocking_key_value_get(f"{ACK_PREFIX}{other}", max(left_ms, 1))
            except Exception:  # noqa: BLE001 - no acknowledgement in time: it stops on its own or was gone
                logging.warning("Process %d did not acknowledge the failure within %.0f s.", other, ACK_TIMEOUT_S)

    def _watch(self) -> None:
        lost_since = None
        me = jax.process_index()
        while not self._stop.wait(self.poll_s):
            try:
                message = self._client.key_value_try_get(FAILED_KEY)
            except Exception as e:  # noqa: BLE001 - NOT_FOUND is the normal case
                if "NOT_FOUND" in str(e):
                    lost_since = None
                    continue
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since < COORDINATOR_LOST_S:
                    continue
                message = f"the coordinator (process 0) is unreachable for {COORDINATOR_LOST_S:.0f} s: {_describe(e)}"
            else:
                try:
                    self._client.key_value_set(f"{ACK_PREFIX}{me}", "stopping")
                except Exception:  # noqa: BLE001 - the acknowledgement only shortens the failed host's wait
                    pass
            if self._stop.is_set():
                return  # the loop ended meanwhile: the main thread decides
            logging.critical(
                "Stopping process %d: %s. Its steps since the last checkpoint are lost; fix the cause and rerun the "
                "same command to resume from that checkpoint. Exit status %d.", me, message, PEER_FAILED_EXIT_CODE,
            )
            _flush()
            self._exit(PEER_FAILED_EXIT_CODE)
            return


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not keep the process alive
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def exit_after_failure(error: BaseException, code: int = 1) -> None:
    """On a multi-process run's failed host: log the error and leave without the shutdown barrier.

    Returns (does nothing) in a single-process run, where the caller raises as usual.
    """
    if jax.process_count() <= 1:
        return
    logging.exception("Process %d failed: %s", jax.process_index(), _describe(error), exc_info=error)
    _flush()
    os._exit(code)
