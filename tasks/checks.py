"""What the layers and the verification both use to check: report lines, bounded waits, failures.

Checks are operations that change nothing (a re-run still reports zero changes);
they run only at execution, poll with a deadline instead of sleeping a fixed time,
and fail the host with what an admin needs to see.
"""

from __future__ import annotations

import shlex
import time

from pyinfra import host, logger
from pyinfra.api import operation

from tasks.operations import fail, run

SHARE_DIR = "/usr/local/share/pyinfra-galaxy-slurm"  # the verification's scripts and venv on the hosts
LOG_EVERY = 10  # a longer wait says what it waits for this often
POLL = 0.25  # a test job starts and ends within a fraction of a second: a 1 s poll doubled the check


class CheckFailed(Exception):
    pass


def report(message: str) -> None:
    logger.info(f"{host.print_prefix}{message}")


class BoundedWait:
    """A wait of at most `seconds` that logs what it waits for every LOG_EVERY seconds."""

    def __init__(self, seconds: float):
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.next_log = self.started + LOG_EVERY

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def pause(self, waiting_for: str) -> None:
        """Sleep one poll interval; `waiting_for` is logged when the wait has lasted a while."""
        if time.monotonic() >= self.next_log:
            report(f"waiting for {waiting_for} ... {self.elapsed:.0f} s")
            self.next_log += LOG_EVERY
        time.sleep(POLL)


@operation(is_idempotent=True)
def file_present(path: str):
    """Fail the host when `path` does not exist (a file the deploy relies on but does not make)."""
    if host.state.is_executing and not run(f"test -e {shlex.quote(path)}")[0]:
        yield fail(f"{path} does not exist on {host.name}")
