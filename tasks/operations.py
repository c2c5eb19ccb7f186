"""Custom pyinfra operations that keep a change from losing anything.

- `config_file`: put a configuration file; when it replaces different content,
  the old file is kept first as `<file>.<run time>.pgs-backup`.
- `restart_checked`: restart a service, wait until it is healthy, and if it is
  not, put back the configuration files this run replaced, restart again and
  fail with the log tail, so a bad change never leaves a service down unsaid.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from io import BytesIO

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

# One timestamp for the whole run: every backup of a run has the same suffix,
# which is how a rollback finds the files this run replaced.
RUN_STAMP = time.strftime("%Y%m%dT%H%M%S")
BACKUP_SUFFIX = f".{RUN_STAMP}.pgs-backup"
LOG_TAIL_LINES = 40


def backup_of(path: str) -> str:
    return path + BACKUP_SUFFIX


@operation()
def config_file(content: str | bytes, dest: str, user: str = "root", group: str = "root", mode: str = "0644"):
    data = content.encode() if isinstance(content, str) else content
    remote_sha1 = host.get_fact(Sha1File, path=dest)
    if remote_sha1 and remote_sha1 != hashlib.sha1(data).hexdigest():
        yield f"cp -p {shlex.quote(dest)} {shlex.quote(backup_of(dest))}"
    yield from files.put._inner(src=BytesIO(data), dest=dest, user=user, group=group, mode=mode)


@operation()
def config_absent(path: str):
    """Remove a configuration file this deploy no longer uses, kept first as its backup
    (so a rollback can bring it back)."""
    if host.get_fact(Sha1File, path=path):
        yield f"cp -p {shlex.quote(path)} {shlex.quote(backup_of(path))} && rm -f {shlex.quote(path)}"


def restore_commands(paths: list[str], created: list[str] = ()) -> list[str]:
    """Shell commands that put back this run's backups of `paths` (at execution: only
    those that exist) and remove the files in `created` (this run made them)."""
    commands = [f"cp -p {shlex.quote(backup_of(p))} {shlex.quote(p)}" for p in paths
                if run(f"test -e {shlex.quote(backup_of(p))}")[0]]
    commands += [f"rm -f {shlex.quote(p)}" for p in created]
    return commands


def run(command: str, timeout: int = 60) -> tuple[bool, str]:
    """Run a read-only command on the current host at execution: (succeeded, output)."""
    ok, output = host.run_shell_command(StringCommand(command), _timeout=timeout)
    return ok, output.stdout if ok else output.output


def fail(message: str) -> StringCommand:
    """A command that fails with `message`: pyinfra prints it and fails the host."""
    return StringCommand(f"printf '%s\\n' {shlex.quote(message)} >&2; exit 1")


def wait_until(check: str, timeout: float, settle: float = 0, broken: str | None = None) -> bool:
    """Poll `check` until it succeeds (and still does `settle` seconds later);
    give up early once `broken` succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broken and run(broken)[0]:
            return False
        if run(check)[0]:
            if not settle:
                return True
            time.sleep(settle)
            if run(check)[0]:
                return True
        time.sleep(0.5)
    return False


def log_tail(log: str, unit: str | None = None) -> str:
    """The end of a log file, and of a systemd unit's journal (where early fatal errors go)."""
    text = run(f"echo '--- {log}'; tail -n {LOG_TAIL_LINES} {shlex.quote(log)} 2>&1")[1]
    if unit:
        text += "\n" + run(f"echo '--- journal of {unit}'; journalctl -u {unit} -n {LOG_TAIL_LINES // 2} --no-pager -o cat 2>&1")[1]
    return text


@operation(is_idempotent=False)
def restart_checked(restart, healthy: str, configs: list[str], log: str, what: str, unit: str | None = None,
                    broken: str | None = None, timeout: int = 60, settle: float = 3, on_rollback=None,
                    on_failure=None):
    """Restart, then wait until `healthy` succeeds; else roll the configs back.

    `restart` is a command, or a callable that returns one at execution (when it
    depends on what earlier operations changed). `broken` (default for a systemd
    `unit`: it has failed) ends the wait early. `on_failure(log_tail)`, when given,
    replaces the rollback: the operation succeeds and the caller rolls back later
    (on every host, which a failed host could not take part in: pyinfra drops it).
    """
    broken = broken or (f"systemctl is-failed --quiet {unit}" if unit else None)
    if callable(restart):
        if not host.state.is_executing:
            yield StringCommand(f"true  # restart {what}, decided at execution")
            return
        restart = restart()
    yield StringCommand(f"{restart} || true")  # a failed start is judged by `healthy` below
    if not host.state.is_executing or wait_until(healthy, timeout, settle, broken):
        return
    failure_log = log_tail(log, unit)
    if on_failure:
        on_failure(failure_log)
        return
    backups = [path for path in configs if run(f"test -e {shlex.quote(backup_of(path))}")[0]]
    if on_rollback:
        on_rollback()
    if not backups:
        yield fail(f"{what} is not healthy after its restart, and this run replaced none of its configuration "
                   f"({', '.join(configs)}):\n{failure_log}")
        return
    yield StringCommand(" && ".join(f"cp -p {shlex.quote(backup_of(p))} {shlex.quote(p)}" for p in backups))
    yield StringCommand(f"{restart} || true")
    recovered = wait_until(healthy, timeout, settle, broken)
    state = "it runs again with the previous configuration" if recovered else "it is STILL DOWN with the previous one too"
    yield fail(
        f"{what} did not come back after this run changed {', '.join(backups)}; restored the previous "
        f"version{'s' if len(backups) > 1 else ''} (the new one is gone; the old is also kept as *{BACKUP_SUFFIX}) "
        f"and restarted: {state}. Fix the inventory and re-run. Log before the rollback:\n{failure_log}"
    )
