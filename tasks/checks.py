"""What the layers and the verification both use to check: report lines, bounded waits, failures.

Checks are operations that change nothing (a re-run still reports zero changes);
they run only at execution, poll with a deadline instead of sleeping a fixed time,
and fail the host with what an admin needs to see.
"""

from __future__ import annotations

import re
import shlex
import time

from pyinfra import host, logger
from pyinfra.api import operation

from tasks.operations import fail, run
from tasks.platform import HEALTH_CHECK_PROGRAM, HEALTH_CHECK_REASON

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


@operation(is_idempotent=True)
def ready_for_galaxy_jobs(root: str, marker: str, text: str, user: str, venv: str, python_version: str, job_dir: str):
    """Fail the host (naming it, what is missing and the fix) when Galaxy's jobs could not run here:
    `root` is not the Galaxy host's shared directory (the marker the Galaxy host wrote there, first
    line `text`, is not read here); or, once Galaxy's venv is built by the Galaxy host's Python
    (`python_version`, major.minor), the venv does not run on that Python here, or `user` cannot
    write the job working directory `job_dir`. A node failing either of the first two is drained at
    once by its own health check; one whose health check drained it and that passes now is resumed
    by it (a visible change), so a re-run after the fix brings the node back."""
    if not host.state.is_executing:
        return
    if not run(f"test -d {shlex.quote(root)}")[0]:
        yield fail(f"node {host.name}: {root} does not exist: Galaxy's jobs would fail here; mount Galaxy's shared "
                   "directory (shared_fs) and re-run")
        return
    if not run(f"head -n 1 {shlex.quote(marker)} | grep -qxF {shlex.quote(text)}")[0]:
        # Drained now by its own health check (a running cluster), so that no job, the verification's
        # Galaxy job among them, lands on it before an admin mounts the directory.
        run(f"test -x {HEALTH_CHECK_PROGRAM} && {HEALTH_CHECK_PROGRAM}")
        yield fail(f"node {host.name}: {root} is not the Galaxy host's shared directory ({marker}, written there by "
                   "this run, is not read here): Galaxy's jobs would fail on this node; mount the Galaxy host's "
                   f"{root} here (shared_fs) and re-run")
        return
    python = f"{venv}/bin/python"
    _, made_by = run(f"sed -n 's/^version *= *\\([0-9]*\\.[0-9]*\\).*/\\1/p' {shlex.quote(venv)}/pyvenv.cfg")
    if made_by.strip() != python_version:
        # None yet (a first install), or made by another Python: the Galaxy layer rebuilds it this run
        # (galaxy_rebuild_venv) or the run was refused before any change. The Galaxy check proves it.
        return
    as_user = f"runuser -u {shlex.quote(user)} --"
    # The venv must run here on the Python that made it: bin/python leads to this host's python3,
    # another version on another Debian release (importing Galaxy would cost seconds a node).
    _, here = run(f"{as_user} timeout 10 {shlex.quote(python)} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    if here.strip() != python_version:
        run(f"test -x {HEALTH_CHECK_PROGRAM} && {HEALTH_CHECK_PROGRAM}")  # drains it
        yield fail(f"node {host.name}: Galaxy's venv needs Python {python_version}, and {python} runs "
                   f"{here.strip() or 'nothing'} here; Galaxy's jobs run it on every compute host: give this host the "
                   "Galaxy host's Debian release (its python3) and re-run")
    elif not run(f"{as_user} sh -c {shlex.quote(f'test ! -e {shlex.quote(job_dir)} || test -w {shlex.quote(job_dir)}')}")[0]:
        yield fail(f"node {host.name}: {user} cannot write Galaxy's job working directory {job_dir} here; "
                   "check the shared filesystem's export (rw, uid/gid of the galaxy account) and re-run")
    elif drained_by_health_check(run('scontrol --oneliner show node "$(hostname -s)" 2>/dev/null')[1]):
        yield HEALTH_CHECK_PROGRAM  # what it drained the node for is back: it resumes the node now


def drained_by_health_check(node_info: str) -> bool:
    """Whether `scontrol --oneliner show node` output is of a node the health check drained."""
    return bool(re.search(r" State=\S*DRAIN", node_info)) and f" Reason={HEALTH_CHECK_REASON}" in node_info
