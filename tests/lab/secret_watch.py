"""Catch secrets in files another user can read, on lab hosts, while a deploy runs.

`SecretWatch` starts one watcher per host over SSH (through sudo on a sudo-user
lab) that runs as `nobody` (setpriv): whatever it can read, any other user on
the host can read too. It walks /tmp, /var/tmp and the SSH user's home, at once
when inotify reports a change in one of them and at least every POLL_SECONDS,
and sends back a copy of every regular file version it could read (up to
COPY_BYTES of it). pyinfra's sudo uploads live in /tmp for a few SSH round
trips only, so the watcher must be on the host, not polled over SSH. On exit
the same walk runs once more, after the deploy ("left behind"). A file it could
open once it keeps open, and reads again when it changes or is removed, so a
temp file written and removed between two polls is still copied whole.

`secret_forms` gives every form in which a secret could appear (munge key raw,
hex, base64; every value of Galaxy's secrets.json); `findings` names each
watched file holding one, `leaks_in_text` each form found in a text (pyinfra's output).

    python -m tests.lab.secret_watch --inventory /var/lib/pgs-lab/h4a/hosts.json -- \\
        .venv/bin/pyinfra -y lab/inventory.py deploy.py --data deploy_galaxy=false

runs a command under the watch and reports (exit 1 on any finding).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import testinfra

from lab import settings

POLL_SECONDS = settings.WATCH_POLL.seconds()
COPY_BYTES = settings.WATCH_COPY_BYTES.number()
START_TIMEOUT = 30  # seconds for every watcher to finish its first walk
STOP_TIMEOUT = 60  # seconds for every watcher to finish its last walk
NOBODY = "65534"
MUNGE_KEY = "/etc/munge/munge.key"
GALAXY_SECRETS = "/srv/galaxy/config/secrets.json"
GALAXY_ADMIN_KEY = "/etc/pyinfra-galaxy-slurm/galaxy-admin.json"  # the admin account's own API key and first password
SLURMDBD_CONF = "/etc/slurm/slurmdbd.conf"

# Runs on the lab host as nobody: python3 -c WATCHER [--once] DIR...
# Prints one JSON line per readable file version, {"ready": 1} after the first walk,
# {"done": 1} after the last; stops (after a last walk) when its stdin closes.
WATCHER = r'''
import base64, ctypes, hashlib, json, os, select, stat, sys, time
args = sys.argv[1:]
once = args[:1] == ["--once"]
dirs = args[1:] if once else args
poll, limit = float(os.environ.get("WATCH_POLL", "0.015")), int(os.environ.get("WATCH_COPY_BYTES", "1048576"))
MAX_HELD = 512
os.chdir("/")
seen, sent, held = {}, {}, {}  # held: path -> [fd, inode, signature]; read again after a change or unlink

def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()

def signature(st):
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)

def copy(path, fd, st):
    data = os.pread(fd, limit, 0)
    digest = hashlib.sha256(data).hexdigest()
    if sent.get(path) != digest:
        sent[path] = digest
        emit({"path": path, "mode": "%04o" % (st.st_mode & 0o7777), "uid": st.st_uid, "size": st.st_size,
              "time": time.time(), "sha256": digest, "data": base64.b64encode(data).decode()})

def reread_held():
    # A file once opened stays readable through its fd after it is written,
    # moved or removed: a temp file that lives a few ms is still copied whole.
    for path, (fd, inode, last) in list(held.items()):
        st = os.fstat(fd)
        if signature(st) != last:
            copy(path, fd, st)
            held[path][2] = signature(st)
        try:
            replaced = os.stat(path, follow_symlinks=False).st_ino != inode
        except OSError:
            replaced = True
        if st.st_nlink == 0 or replaced:
            os.close(fd)
            del held[path]

def walk():
    stack = list(dirs)
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # not ours to list, or gone
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
                continue
            if not stat.S_ISREG(st.st_mode) or seen.get(entry.path) == signature(st) or entry.path in held:
                continue
            seen[entry.path] = signature(st)
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:  # other users cannot read it: fine
                continue
            st = os.fstat(fd)
            copy(entry.path, fd, st)
            if len(held) < MAX_HELD and not once:
                held[entry.path] = [fd, st.st_ino, signature(st)]
            else:
                os.close(fd)

def inotify():
    # An fd that becomes readable when a file in one of dirs is created, written or
    # moved in; None without inotify. Subdirectories are left to the poll.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    for path in dirs:  # IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        libc.inotify_add_watch(fd, path.encode(), 0x2 | 0x4 | 0x8 | 0x80 | 0x100)
    return fd

walk()
emit({"ready": 1})
if not once:
    events = inotify()
    watched = [0] + ([events] if events is not None else [])
    while True:
        ready = select.select(watched, [], [], poll)[0]
        if 0 in ready and not os.read(0, 4096):
            break
        if events in ready:
            try:
                os.read(events, 65536)
            except BlockingIOError:
                pass
        reread_held()
        walk()
    reread_held()
    walk()
emit({"done": 1})
'''


@dataclass(frozen=True)
class ReadableFile:
    """One version of a file that another user could read on a lab host."""

    host: str
    path: str
    mode: str  # e.g. "0644"
    uid: int  # owner
    size: int  # bytes on disk when read
    sha256: str  # of the copy
    data: bytes  # the copy (its first COPY_BYTES)
    when: str  # "during the run" or "left behind"

    def describe(self) -> str:
        return f"{self.host}:{self.path} (mode {self.mode}, owner uid {self.uid}, {self.size} bytes, {self.when})"


def lab_ssh_user(lab_data: dict) -> str:
    return lab_data.get("ssh_user", "root")


def testinfra_host(lab_data: dict, name: str) -> testinfra.host.Host:
    """testinfra host NAME of a lab (its hosts.json as a dict): over SSH with the lab's
    key as the lab's SSH user, every command through sudo when that user is not root."""
    address = next(h["address"] for h in lab_data["hosts"] if h["name"] == name)
    user = lab_ssh_user(lab_data)
    sudo = "&sudo=True" if user != "root" else ""
    return testinfra.get_host(
        f"paramiko://{user}@{address}?ssh_identity_file={lab_data['ssh_key']}&timeout=10{sudo}",
        ssh_config=lab_data["ssh_config"],
    )


class SecretWatch:
    """Watch every host of a lab while the `with` block runs; then `records` holds
    every file version another user could read, during the block and after it."""

    def __init__(self, lab_data: dict):
        self.lab_data = lab_data
        user = lab_ssh_user(lab_data)
        self.dirs = ["/tmp", "/var/tmp", "/root" if user == "root" else f"/home/{user}"]
        self.records: list[ReadableFile] = []
        self._processes: dict[str, subprocess.Popen] = {}
        self._readers: list[threading.Thread] = []
        self._ready: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_inventory(cls, path: Path | str) -> SecretWatch:
        return cls(json.loads(Path(path).read_text()))

    def _command(self, address: str, *args: str) -> list[str]:
        code = f"import base64; exec(base64.b64decode({base64.b64encode(WATCHER.encode()).decode()!r}))"
        remote = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
                  "env", f"WATCH_POLL={POLL_SECONDS}", f"WATCH_COPY_BYTES={COPY_BYTES}",
                  "python3", "-I", "-u", "-c", code, *args]
        if lab_ssh_user(self.lab_data) != "root":
            remote = ["sudo", "-n", *remote]
        return ["ssh", "-F", self.lab_data["ssh_config"], "-T", "-o", "BatchMode=yes", address, shlex.join(remote)]

    def _read(self, host: str, stream, when: str) -> None:
        for line in stream:
            record = json.loads(line)
            if "ready" in record:
                self._ready[host].set()
            elif "path" in record:
                found = ReadableFile(host, record["path"], record["mode"], record["uid"], record["size"],
                                     record["sha256"], base64.b64decode(record["data"]), when)
                with self._lock:
                    self.records.append(found)

    def _start(self, host: str, address: str, *args: str, when: str) -> subprocess.Popen:
        self._ready[host] = threading.Event()
        process = subprocess.Popen(self._command(address, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=self._read, args=(host, process.stdout, when), daemon=True)
        reader.start()
        self._readers.append(reader)
        return process

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for host, event in self._ready.items():
            if not event.wait(max(0.0, deadline - time.monotonic())):
                process = self._processes.get(host)
                error = process.stderr.read() if process and process.poll() is not None else "no answer"
                raise RuntimeError(f"the secret watcher on {host} did not start within {timeout} s: {error}")

    def __enter__(self) -> SecretWatch:
        for entry in self.lab_data["hosts"]:
            self._processes[entry["name"]] = self._start(entry["name"], entry["address"], *self.dirs,
                                                         when="during the run")
        self._wait_ready(START_TIMEOUT)
        return self

    def __exit__(self, *exc) -> None:
        for process in self._processes.values():
            process.stdin.close()  # the watcher walks once more and stops
        deadline = time.monotonic() + STOP_TIMEOUT
        for host, process in self._processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                raise RuntimeError(f"the secret watcher on {host} did not stop within {STOP_TIMEOUT} s")
        self.scan_after()

    def scan_after(self) -> None:
        """One more walk of every host: files left behind after the run."""
        finals = [self._start(e["name"], e["address"], "--once", *self.dirs, when="left behind")
                  for e in self.lab_data["hosts"]]
        for process in finals:
            process.stdin.close()
            process.wait(STOP_TIMEOUT)
        for reader in self._readers:
            reader.join(STOP_TIMEOUT)

    def findings(self, forms: dict[str, str]) -> list[str]:
        return findings(self.records, forms)


def findings(records: list[ReadableFile], forms: dict[str, str]) -> list[str]:
    """'<file>: <secret form>' for each readable file version holding a form of a secret."""
    return [f"{found.describe()}: {name}"
            for found in records for name, value in forms.items() if _as_bytes(value) in found.data]


def _as_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")  # the raw munge key's slice is bytes held as latin-1
    except UnicodeEncodeError:
        return value.encode()


def secret_forms(controller: testinfra.host.Host, galaxy: testinfra.host.Host | None = None) -> dict[str, str]:
    """Every form in which a secret could show up, by name: the munge key on the
    controller (hex, base64 and its first line, a raw slice as latin-1), slurmdbd's
    database password (slurmdbd.conf on the controller) and every string value of
    Galaxy's secrets.json and of the admin account's key file on the galaxy host."""
    key = base64.b64decode(controller.check_output(f"base64 -w0 {MUNGE_KEY}"))
    encoded = base64.b64encode(key).decode()
    forms = {
        "munge key (hex)": key.hex(),
        "munge key (base64)": encoded,
        "munge key (base64, wrapped)": encoded[:64],
        "munge key (raw)": key[8:40].decode("latin-1"),
    }
    # slurmdbd's database password, when accounting runs on the controller.
    dbd_conf = controller.run(f"cat {SLURMDBD_CONF}")
    for line in dbd_conf.stdout.splitlines() if dbd_conf.rc == 0 else []:
        if line.startswith("StoragePass="):
            forms["slurmdbd database password"] = line.split("=", 1)[1].strip()
    for path, label in ((GALAXY_SECRETS, "galaxy"), (GALAXY_ADMIN_KEY, "galaxy admin account")):
        if galaxy is not None and galaxy.file(path).exists:
            for name, value in json.loads(galaxy.check_output(f"cat {path}")).items():
                if isinstance(value, str) and len(value) >= 12 and name not in ("email", "user_id"):
                    forms[f"{label} {name}"] = value
    return forms


def leaks_in_text(text: str, forms: dict[str, str]) -> list[str]:
    """The names of the forms that appear in text."""
    return [name for name, value in forms.items() if value in text]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", required=True, help="the lab's hosts.json")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...: run under the watch")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    lab_data = json.loads(Path(args.inventory).read_text())
    env = {**os.environ, "LAB_INVENTORY": args.inventory}
    with SecretWatch(lab_data) as watch:
        started = time.monotonic()
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
    names = {group: [h["name"] for h in lab_data["hosts"] if group in h["groups"]] for group in ("slurm_controller", "galaxy")}
    controller = testinfra_host(lab_data, names["slurm_controller"][0])
    galaxy = testinfra_host(lab_data, names["galaxy"][0]) if names["galaxy"] else None
    forms = secret_forms(controller, galaxy)
    problems = watch.findings(forms) + [f"command output: {name}" for name in leaks_in_text(run.stdout + run.stderr, forms)]
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    for problem in problems:
        print(f"SECRET READABLE: {problem}", file=sys.stderr)
    print(f"command exited {run.returncode} after {seconds:.1f} s; {len(watch.records)} readable file versions seen; "
          f"{len(problems)} with a secret", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
