"""Custom pyinfra operations that keep a change from losing anything.

- `config_file`: put a configuration file; when it replaces different content,
  the old file is kept first as `<file>.<run time>.pgs-backup`.
- `restart_checked`: restart a service, wait until it is healthy, and if it is
  not, put back the configuration files this run replaced, restart again and
  fail with the log tail, so a bad change never leaves a service down unsaid.
- `run` / `read_secret`: the deploy's own remote commands, sent with the run's
  privilege settings (`--sudo`, `_sudo`/`_sudo_user` host data) like pyinfra's
  operations, so nothing depends on logging in as root.

Secrets (`config_file(..., secret=True)`, `read_secret`) travel through a
command's stdin and stdout, never through a file: pyinfra's own upload under
sudo stages the file as the SSH user in a temporary path that other users on
the host can read, and its download under sudo copies it there with `chmod +r`.
Their contents are never printed, at any verbosity.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import time
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.api.arguments import auth_argument_meta, pop_global_arguments
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

# One timestamp for the whole run: every backup of a run has the same suffix,
# which is how a rollback finds the files this run replaced.
STAMP_FORMAT = "%Y%m%dT%H%M%S"
RUN_STAMP = time.strftime(STAMP_FORMAT)
BACKUP_MARK = ".pgs-backup"  # how every copy the deploy keeps of what it replaced ends
BACKUP_SUFFIX = f".{RUN_STAMP}{BACKUP_MARK}"
LOG_TAIL_LINES = 40


def backup_of(path: str) -> str:
    return path + BACKUP_SUFFIX


@operation()
def config_file(content: str | bytes, dest: str, user: str = "root", group: str = "root", mode: str = "0644",
                secret: bool = False):
    """Put a configuration file (`content`: text or bytes); a file it replaces is kept as a backup first.

    `secret=True`: the content goes through the command's stdin into a new file
    in `dest`'s own directory, created 0600 (umask 077), owned and moded, then
    renamed over `dest`: it is never in a temporary file elsewhere nor in output.
    """
    data = content.encode() if isinstance(content, str) else content
    remote_sha1 = host.get_fact(Sha1File, path=dest)
    if remote_sha1 and remote_sha1 != hashlib.sha1(data).hexdigest():
        yield f"cp -p {shlex.quote(dest)} {shlex.quote(backup_of(dest))}"
    if not secret:
        yield from files.put._inner(src=BytesIO(data), dest=dest, user=user, group=group, mode=mode)
    elif remote_sha1 != hashlib.sha1(data).hexdigest():
        yield _write_through_stdin(data, dest, user, group, mode)
    else:
        yield from files.file._inner(path=dest, user=user, group=group, mode=mode, touch=False)


def _write_through_stdin(data: bytes, dest: str, user: str, group: str, mode: str) -> FunctionCommand:
    target = shlex.quote(dest)
    command = StringCommand(
        f"umask 077 && tmp=$(mktemp {target}.XXXXXX) && base64 -d > \"$tmp\" && chown {user}:{group} \"$tmp\" "
        f"&& chmod {mode} \"$tmp\" && mv -f \"$tmp\" {target} || {{ rm -f \"$tmp\"; exit 1; }}"
    )
    return secret_stdin_command(command, base64.b64encode(data).decode(), f"writing {dest}")


def secret_stdin_command(command: StringCommand, stdin: str, what: str) -> FunctionCommand:
    """A command (yielded by an operation) that gets a secret on its stdin, with the run's
    privileges: the secret is in no command line, file or output; only `what` is logged on failure."""
    privileges = privilege_arguments()

    def run_with_secret(state, host) -> bool:  # pyinfra passes state and host to FunctionCommands
        ok, output = host.run_shell_command(command, _stdin=stdin, print_output=False, **privileges)
        if not ok:
            logger.error(f"{host.print_prefix}{what} failed: {output.stderr}")
        return ok

    return FunctionCommand(run_with_secret, (), {})


def privilege_arguments(target=None) -> dict:
    """The run's privilege settings for a host (`--sudo`, `_sudo`, `_sudo_user`, `_su_user`... from the
    command line, the host's data or the current @deploy), as pyinfra gives them to its operations."""
    target = target or host
    arguments, _ = pop_global_arguments(target.state, target, {})
    return {key: value for key, value in arguments.items() if key in auth_argument_meta}


def read_secret(path: str, target=None) -> bytes | None:
    """The contents of a secret file on a host (None when it does not exist), read through a command's
    stdout with the run's privileges: never copied to a temporary file, never printed.

    Raises PyinfraError when the file exists but cannot be read.
    """
    target = target or host
    quoted = shlex.quote(path)
    ok, output = target.run_shell_command(
        StringCommand(f"if test -e {quoted}; then echo present; base64 -w0 {quoted}; else echo absent; fi"),
        print_output=False, **privilege_arguments(target),
    )
    lines = output.stdout_lines
    if not ok or not lines or lines[0] not in ("present", "absent"):
        raise PyinfraError(f"cannot read {path} on {target.name}: {output.stderr or 'no output'}; "
                           "the deploy needs root there (SSH as root, or --sudo / _sudo host data)")
    return base64.b64decode("".join(lines[1:])) if lines[0] == "present" else None


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
    ok, output = host.run_shell_command(StringCommand(command), _timeout=timeout, **privilege_arguments())
    return ok, output.stdout if ok else output.output


def changed_operations() -> list[str]:
    """The operations that changed a host so far in this run, on every host ("host: name").
    pyinfra finishes each operation on every host before the next starts, so at execution
    this is everything before the calling operation."""
    state = host.state
    return [f"{each_host.name}: {', '.join(sorted(state.get_op_meta(op_hash).names))}"
            for each_host, ops in state.ops.items() for op_hash, data in ops.items()
            if data.operation_meta.is_complete() and data.operation_meta.did_change()]


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
    if on_rollback:
        on_rollback()
    yield from rolled_back(restart, healthy, configs, what, "did not come back", failure_log, timeout=timeout,
                           settle=settle, broken=broken)


def rolled_back(restart: str, healthy: str, configs: list[str], what: str, why: str, evidence: str,
                timeout: int = 60, settle: float = 3, broken: str | None = None):
    """Commands (for an operation to yield) that put back this run's backups of `configs`,
    run `restart` again, wait until `healthy`, and fail the host saying what was restored,
    why (`what` `why`: "Galaxy did not come back") and with `evidence` (a log tail, a report).
    With no backup (this run replaced none of `configs`) they only fail."""
    backups = [path for path in configs if run(f"test -e {shlex.quote(backup_of(path))}")[0]]
    if not backups:
        replaced = f", and this run replaced none of its configuration ({', '.join(configs)})" if configs else ""
        yield fail(f"{what} {why}{replaced}:\n{evidence}")
        return
    yield StringCommand(" && ".join(f"cp -p {shlex.quote(backup_of(p))} {shlex.quote(p)}" for p in backups))
    yield StringCommand(f"{restart} || true")
    recovered = wait_until(healthy, timeout, settle, broken)
    state = "it runs again with the previous configuration" if recovered else "it is STILL DOWN with the previous one too"
    yield fail(
        f"{what} {why} after this run changed {', '.join(backups)}; restored the previous "
        f"version{'s' if len(backups) > 1 else ''} (the new one is gone; the old is also kept as *{BACKUP_SUFFIX}) "
        f"and restarted: {state}. Fix the inventory and re-run. Before the rollback:\n{evidence}"
    )


BACKGROUND_TIMEOUT = 1800  # seconds a wait for work started in the background lasts at most


@operation()
def started_in_background(unit: str, command: str, user: str = "root", directory: str = "/"):
    """`command` (sh) started as the transient systemd unit `unit`, as `user` (HOME and working
    directory `directory`), while the run goes on: its output goes to the journal
    (`journalctl -u <unit>`). `finished_in_background` waits for it."""
    yield StringCommand(
        f"systemd-run --quiet --unit {shlex.quote(unit)} --uid {shlex.quote(user)} --gid {shlex.quote(user)} "
        f"--working-directory {shlex.quote(directory)} --setenv HOME={shlex.quote(directory)} "
        f"/bin/sh -c {shlex.quote(command)}"
    )


@operation(is_idempotent=True)
def finished_in_background(unit: str, what: str):
    """Wait for the transient unit `unit` (this run's, or one a failed run left running) to end.
    If it failed, say so with its journal and go on: the operations after this one do in order
    what it did not. None started (a finished transient unit is gone): nothing to wait for."""
    if not host.state.is_executing:
        return
    active, failed = (f"systemctl is-active --quiet {unit}", f"systemctl is-failed --quiet {unit}")
    if not run(active)[0] and not run(failed)[0]:
        return
    started = time.monotonic()
    if not wait_until(f"! {active}", BACKGROUND_TIMEOUT):
        yield fail(f"{what} ({unit}) still runs after {BACKGROUND_TIMEOUT} s: see journalctl -u {unit}")
    elif run(failed)[0]:
        _, journal = run(f"journalctl -u {unit} -n 20 --no-pager; systemctl reset-failed {unit}")
        logger.warning(f"{host.print_prefix}{what} failed in the background; it is done in order now instead:\n{journal}")
    else:
        logger.info(f"{host.print_prefix}{what}: finished {time.monotonic() - started:.1f} s after this run reached it")
