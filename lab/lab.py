#!/usr/bin/env python3
"""The local lab: real Debian hosts on this machine, for the demo and the tests.

Each host is a systemd-nspawn container booted with systemd as PID 1, in its own
network namespace, on a private bridge with NAT to the package registries, and
reachable over SSH with a key generated for the lab: as root, or with
--ssh-user NAME as a normal user NAME (uid 1000) with passwordless sudo, root's
SSH login then refused, as on hosts where admins may not log in as root. Hosts start bare:
no cluster entries in /etc/hosts, no Slurm. They share one directory, bound at
/srv/galaxy on every host, standing in for a cluster's shared filesystem.

    lab.py up [--nodes N] [--release bookworm|trixie] [--ssh-user NAME] [--drmaa-tarball PATH]   idempotent
    lab.py down [--purge-cache]                          removes all it made
    lab.py stop HOST / start HOST                        power a host off / on
    lab.py reboot HOST                                   a reboot: systemd's shutdown (cut after STOP_TIMEOUT), boot
    lab.py runner [--drmaa-tarball PATH | --cli]         show / change the lab's Galaxy job runner
    lab.py status                                        its hosts and its Galaxy job runner

`up` writes the lab's record, LAB_STATE_ROOT/NAME/hosts.json (settings.hosts_file), which
lab/inventory.py reads: the hosts, the SSH key and user, the release, and the Galaxy job
runner the lab was made with. Lab hosts reach no release downloads, so the DRMAA runner needs
a slurm-drmaa release tarball on this machine: `up --drmaa-tarball PATH` (default:
SLURM_DRMAA_TARBALL, which the Makefile sets when ../shared/slurm-drmaa/ holds one) records
the DRMAA runner and that tarball; without one the lab records the CLI runner and says so.
Every deploy of the lab then uses the recorded runner, whatever its environment holds; `up`
on an existing lab keeps it, and `runner` changes it (the next deploy switches Galaxy over).

Several labs can live side by side: each has a name (--name / LAB_NAME) and a
/24 subnet (--subnet / LAB_SUBNET). Base images, apt archives and pip wheels are
cached in LAB_CACHE_ROOT (/var/cache/pgs-lab) so repeated runs download nothing twice; the
deploy itself still installs everything for real. Every variable's default and meaning:
lab/settings.py.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its lab package, not this script
from lab import settings

CACHE_ROOT = settings.cache_root()
RELEASES = ("bookworm", "trixie")
BASE_PACKAGES = (
    "systemd,systemd-sysv,dbus,openssh-server,python3,ca-certificates,"
    "iproute2,procps,util-linux,netbase,less,sudo"
)
# mmdebstrap hooks run on the base image ("$1" is its root).
BASE_HOOKS = (
    # The lab hosts must trust this machine's CA certificates (TLS-inspected
    # registries): lab plumbing, not part of the deploy.
    'mkdir -p "$1/usr/local/share/ca-certificates"',
    'cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true',
    'chroot "$1" update-ca-certificates >/dev/null',
    # Lab hosts share one pip wheel cache (bound in at boot).
    'printf "[global]\\ncache-dir = /var/cache/pip\\n" > "$1/etc/pip.conf"',
)
SHARED_MOUNT = "/srv/galaxy"
SSH_USER_UID = 1000
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
SSH_TIMEOUT = 90
IMAGE_ATTEMPTS = 3
STOP_TIMEOUT = 30
NAT_COMMENT = "pgs-lab"


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"lab: command failed ({result.returncode}): {' '.join(args)}\n{result.stderr.strip()}")
    if not quiet and result.returncode != 0:
        log(f"ignored failure of {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Lab:
    name: str
    subnet: ipaddress.IPv4Network

    @property
    def state_dir(self) -> Path:
        return settings.state_dir(self.name)

    @property
    def bridge(self) -> str:
        return f"{self.name}-br"[:15]

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def hosts_file(self) -> Path:
        return settings.hosts_file(self.name)

    @property
    def shared_dir(self) -> Path:
        return self.state_dir / "shared"

    def host_names(self, nodes: int) -> list[str]:
        return [f"{self.name}-head"] + [f"{self.name}-c{i}" for i in range(1, nodes + 1)]

    def address(self, host: str) -> str:
        index = 0 if host.endswith("-head") else int(host.rsplit("-c", 1)[1])
        return str(self.subnet.network_address + 10 + index)

    def nat_rules(self) -> list[tuple[str, ...]]:
        src = str(self.subnet)
        tag = ("-m", "comment", "--comment", f"{NAT_COMMENT}-{self.name}")
        return [
            ("-t", "nat", "POSTROUTING", "-s", src, "!", "-o", self.bridge, "-j", "MASQUERADE", *tag),
            ("-t", "filter", "FORWARD", "-i", self.bridge, "-j", "ACCEPT", *tag),
            ("-t", "filter", "FORWARD", "-o", self.bridge, "-j", "ACCEPT", *tag),
        ]

    def read_hosts(self) -> dict:
        return json.loads(self.hosts_file.read_text()) if self.hosts_file.exists() else {}

    def write_hosts(self, record: dict) -> None:
        temporary = self.hosts_file.with_name(f"{self.hosts_file.name}.tmp{os.getpid()}")
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        temporary.replace(self.hosts_file)


# --- the Galaxy job runner the lab records ------------------------------------

RUNNER_FIELDS = ("galaxy_job_runner", "slurm_drmaa_tarball")


def runner_record(tarball: str) -> dict:
    """hosts.json's runner fields for a lab given a slurm-drmaa TARBALL ("": none, the CLI runner)."""
    if not tarball:
        return {"galaxy_job_runner": "cli", "slurm_drmaa_tarball": None}
    if not os.path.isfile(tarball):
        raise SystemExit(f"lab: no slurm-drmaa tarball at {tarball} (--drmaa-tarball / SLURM_DRMAA_TARBALL)")
    return {"galaxy_job_runner": "drmaa", "slurm_drmaa_tarball": os.path.abspath(tarball)}


def runner_for_up(lab: Lab, recorded: dict, drmaa_tarball: str) -> dict:
    """The runner fields `up` writes: a new lab's from drmaa_tarball; a lab that records
    one keeps it (`runner` changes it), and says so when the tarball given differs."""
    if not recorded.get("galaxy_job_runner"):
        return runner_record(drmaa_tarball)
    kept = {field: recorded.get(field) for field in RUNNER_FIELDS}
    if (os.path.abspath(drmaa_tarball) if drmaa_tarball else None) != kept["slurm_drmaa_tarball"]:
        log(f"{lab.name} keeps the Galaxy job runner it was made with, {describe_runner(kept)}; "
            f"`lab.py --name {lab.name} runner` changes it")
    return kept


def describe_runner(record: dict) -> str:
    runner = record.get("galaxy_job_runner")
    if runner == "drmaa":
        return f"drmaa (slurm-drmaa built from {record['slurm_drmaa_tarball']})"
    if runner == "cli":
        return "cli (the lab was given no slurm-drmaa tarball; `lab.py runner --drmaa-tarball PATH` for DRMAA)"
    return "not recorded (the lab was made before labs recorded it): `lab.py runner --drmaa-tarball PATH` or `lab.py runner --cli`"


@dataclass(frozen=True)
class Host:
    lab: Lab
    name: str
    release: str
    ssh_user: str = "root"

    @property
    def dir(self) -> Path:
        return self.lab.state_dir / "hosts" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> str:
        return f"v{self.name}"[:15]

    @property
    def address(self) -> str:
        return self.lab.address(self.name)

    @property
    def pid_file(self) -> Path:
        return self.dir / "nspawn.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None


# --- base image -------------------------------------------------------------


def base_image(release: str) -> Path:
    """The cached base rootfs of a release, built with mmdebstrap on first use.

    Its directory name carries a hash of the packages and hooks that went into it,
    so a change to either builds a new image beside the old one (which hosts booted
    earlier may still use as their lower layer) instead of reusing a stale one.
    """
    digest = hashlib.sha256("\n".join((BASE_PACKAGES, *BASE_HOOKS)).encode()).hexdigest()[:8]
    base = CACHE_ROOT / f"base-{release}-{digest}"
    if (base / "etc/os-release").exists():
        return base
    log(f"building the {release} base image (once; cached in {base})")
    tmp = base.with_name(f"{base.name}.tmp{os.getpid()}")  # two labs may build it at once
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    command = ("mmdebstrap", "--variant=apt", f"--include={BASE_PACKAGES}",
               *[f"--customize-hook={hook}" for hook in BASE_HOOKS], release, str(tmp))
    # Only a fresh machine (CI's) builds the image, and it downloads a few hundred packages
    # from the mirror: a transient network error gets two more tries before the lab gives up.
    for attempt in range(1, IMAGE_ATTEMPTS + 1):
        shutil.rmtree(tmp, ignore_errors=True)
        result = run(*command, check=attempt == IMAGE_ATTEMPTS, quiet=True)
        if result.returncode == 0:
            break
        last_line = (result.stderr.strip().splitlines() or [""])[-1]
        log(f"mmdebstrap failed ({result.returncode}, attempt {attempt} of {IMAGE_ATTEMPTS}), trying again: {last_line}")
        time.sleep(10)
    try:
        tmp.rename(base)
    except OSError:  # another lab finished the same image first
        shutil.rmtree(tmp, ignore_errors=True)
    return base


# --- network ----------------------------------------------------------------


def network_up(lab: Lab) -> None:
    if run("ip", "link", "show", lab.bridge, check=False, quiet=True).returncode != 0:
        run("ip", "link", "add", lab.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{lab.gateway}/{lab.subnet.prefixlen}", "dev", lab.bridge)
    run("ip", "link", "set", lab.bridge, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    for table_flag, table, chain, *spec in lab.nat_rules():
        if run("iptables", table_flag, table, "-C", chain, *spec, check=False, quiet=True).returncode != 0:
            run("iptables", table_flag, table, "-I", chain, *spec)


def network_down(lab: Lab) -> None:
    for table_flag, table, chain, *spec in lab.nat_rules():
        while run("iptables", table_flag, table, "-C", chain, *spec, check=False, quiet=True).returncode == 0:
            run("iptables", table_flag, table, "-D", chain, *spec)
    if run("ip", "link", "show", lab.bridge, check=False, quiet=True).returncode == 0:
        run("ip", "link", "del", lab.bridge)


def host_network_up(host: Host) -> None:
    if run("ip", "netns", "pids", host.netns, check=False, quiet=True).returncode != 0:
        run("ip", "netns", "add", host.netns)
    ns = ("ip", "netns", "exec", host.netns)
    if run(*ns, "ip", "link", "show", "host0", check=False, quiet=True).returncode != 0:
        run("ip", "link", "del", host.veth, check=False, quiet=True)
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "host0", "netns", host.netns)
        run(*ns, "ip", "addr", "add", f"{host.address}/{host.lab.subnet.prefixlen}", "dev", "host0")
    run("ip", "link", "set", host.veth, "master", host.lab.bridge, "up")
    run(*ns, "ip", "link", "set", "lo", "up")
    run(*ns, "ip", "link", "set", "host0", "up")
    run(*ns, "ip", "route", "replace", "default", "via", host.lab.gateway)


def host_network_down(host: Host) -> None:
    if run("ip", "netns", "pids", host.netns, check=False, quiet=True).returncode == 0:
        run("ip", "netns", "del", host.netns)
    run("ip", "link", "del", host.veth, check=False, quiet=True)


def host_resolver() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        if line.startswith("nameserver"):
            server = line.split()[1]
            if not ipaddress.ip_address(server).is_loopback:
                return f"nameserver {server}\n"
    raise SystemExit("lab: /etc/resolv.conf names no non-loopback nameserver the lab hosts could use")


# --- hosts ------------------------------------------------------------------


def prepare_root(host: Host) -> None:
    """Mount the host's root as an overlay on the base image and personalise it."""
    for sub in ("upper", "work", "root"):
        (host.dir / sub).mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(host.root):
        # A host booted again keeps the base image it was made on, even if a newer one exists.
        lower_record = host.dir / "lower"
        if not lower_record.exists():
            unnamed = CACHE_ROOT / f"base-{host.release}"  # before base images were named by their contents
            made_on_unnamed = (host.dir / "personalised").exists() and unnamed.exists()
            lower_record.write_text(f"{unnamed if made_on_unnamed else base_image(host.release)}\n")
        lower = lower_record.read_text().strip()
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={lower},upperdir={host.dir / 'upper'},workdir={host.dir / 'work'}", str(host.root))
    root = host.root
    (root / "etc/hostname").write_text(f"{host.name}\n")
    personalised = host.dir / "personalised"
    if not personalised.exists():  # a host booted again keeps what the deploy wrote
        (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        personalised.touch()
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text(host_resolver())
    machine_id = root / "etc/machine-id"
    if not machine_id.exists() or len(machine_id.read_text().strip()) != 32:
        machine_id.write_text(secrets.token_hex(16) + "\n")
    if host.ssh_user == "root":
        authorize_key(host, root / "root", 0, 0)
    else:
        add_sudo_user(host)


def authorize_key(host: Host, home: Path, uid: int, gid: int) -> None:
    """The lab's public key in HOME/.ssh/authorized_keys, owned by uid:gid."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(Path(str(host.lab.ssh_key) + ".pub").read_text())
    authorized.chmod(0o600)
    for path in (ssh_dir, authorized):
        os.chown(path, uid, gid)


def add_sudo_user(host: Host) -> None:
    """The host's only SSH login: user ssh_user (uid 1000, home /home/NAME) with
    passwordless sudo; root's login is refused (PermitRootLogin no, no key)."""
    root, user = host.root, host.ssh_user
    if not any(line.split(":", 1)[0] == user for line in (root / "etc/passwd").read_text().splitlines()):
        # '*': no password, but not a locked account, so sshd lets the key in.
        run("chroot", str(root), "useradd", "--create-home", "--uid", str(SSH_USER_UID),
            "--user-group", "--shell", "/bin/bash", "--password", "*", user)
    authorize_key(host, root / "home" / user, SSH_USER_UID, SSH_USER_UID)
    sudoers = root / "etc/sudoers.d/pgs-lab"
    sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    sshd = root / "etc/ssh/sshd_config.d/pgs-lab.conf"  # included before sshd_config's own settings
    sshd.write_text("PermitRootLogin no\n")
    (root / "root/.ssh/authorized_keys").unlink(missing_ok=True)


def cache_binds(host: Host) -> list[str]:
    # Each host has its own apt archive directory: apt locks it while it downloads,
    # so hosts of two labs installing at once failed on each other's lock
    # ("Could not get lock /var/cache/apt/archives/lock"). What any host downloaded
    # before is shared by hard links.
    apt_cache = CACHE_ROOT / "apt" / host.release / host.name
    pip_cache = CACHE_ROOT / "pip" / host.release
    (apt_cache / "partial").mkdir(parents=True, exist_ok=True)
    link_cached_packages(apt_cache)
    pip_cache.mkdir(parents=True, exist_ok=True)
    pip_cache.chmod(0o1777)
    return [f"--bind={apt_cache}:/var/cache/apt/archives", f"--bind={pip_cache}:/var/cache/pip"]


def link_cached_packages(apt_cache: Path) -> None:
    """Hard links in apt_cache to the .deb files the other hosts' archives hold."""
    for other in apt_cache.parent.iterdir():
        if other == apt_cache or not other.is_dir():
            continue
        for deb in other.glob("*.deb"):
            try:
                os.link(deb, apt_cache / deb.name)
            except FileExistsError:
                pass


def boot(host: Host) -> None:
    if host.pid():
        return
    host_network_up(host)
    prepare_root(host)
    host.lab.shared_dir.mkdir(parents=True, exist_ok=True)
    console = open(host.dir / "console.log", "ab")
    process = subprocess.Popen(
        [
            "systemd-nspawn", "-D", str(host.root), "--boot", "--register=no", "--keep-unit",
            f"--network-namespace-path=/run/netns/{host.netns}", "-M", host.name,
            "--console=read-only", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
            f"--bind={host.lab.shared_dir}:{SHARED_MOUNT}", *cache_binds(host),
        ],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
    )
    host.pid_file.write_text(f"{process.pid}\n")


def wait_for_ssh(host: Host, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not host.pid():
            raise SystemExit(f"lab: {host.name} stopped while booting; see {host.dir / 'console.log'}")
        try:
            with socket.create_connection((host.address, 22), timeout=2) as conn:
                if conn.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"lab: {host.name} ({host.address}) did not answer SSH within {SSH_TIMEOUT} s")


def power_off(host: Host) -> None:
    pid = host.pid()
    if pid:
        os.kill(pid, signal.SIGTERM)  # nspawn asks the container's systemd to power off
        deadline = time.monotonic() + STOP_TIMEOUT
        while host.pid() and time.monotonic() < deadline:
            time.sleep(0.2)
        if host.pid():
            log(f"{host.name} did not power off in {STOP_TIMEOUT} s; killing it")
            os.kill(pid, signal.SIGKILL)
            while host.pid():
                time.sleep(0.1)
    host.pid_file.unlink(missing_ok=True)
    if os.path.ismount(host.root):
        run("umount", str(host.root), check=False, quiet=True)
        if os.path.ismount(host.root):
            run("umount", "-l", str(host.root), check=False)


# --- commands ---------------------------------------------------------------


def write_ssh_material(lab: Lab, ssh_user: str) -> None:
    if not lab.ssh_key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{lab.name}-lab", "-f", str(lab.ssh_key))
    (lab.state_dir / "ssh_config").write_text(
        f"Host *\n  User {ssh_user}\n"
        f"  IdentityFile {lab.ssh_key}\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )


def up(lab: Lab, nodes: int, release: str, ssh_user: str, drmaa_tarball: str) -> None:
    if nodes < 1:
        raise SystemExit("lab: --nodes must be at least 1")
    if not USER_NAME.fullmatch(ssh_user):
        raise SystemExit(f"lab: --ssh-user {ssh_user!r} is not a user name (lower-case letters, digits, _ and -)")
    recorded = lab.read_hosts()
    if recorded and recorded["release"] != release:
        raise SystemExit(f"lab: {lab.name} runs {recorded['release']}; `make lab-down` before switching to {release}")
    if recorded and recorded.get("ssh_user", "root") != ssh_user:
        raise SystemExit(f"lab: {lab.name} logs in as {recorded.get('ssh_user', 'root')}; "
                         f"`make lab-down` before switching to --ssh-user {ssh_user}")
    runner = runner_for_up(lab, recorded, drmaa_tarball)
    started = time.monotonic()
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    write_ssh_material(lab, ssh_user)
    base_image(release)
    network_up(lab)
    hosts = [Host(lab, name, release, ssh_user) for name in lab.host_names(nodes)]
    for host in hosts:
        boot(host)
    deadline = time.monotonic() + SSH_TIMEOUT
    for host in hosts:
        wait_for_ssh(host, deadline)
    inventory = {
        "lab": lab.name,
        "release": release,
        "ssh_user": ssh_user,
        "ssh_key": str(lab.ssh_key),
        "ssh_config": str(lab.state_dir / "ssh_config"),
        "shared_dir": SHARED_MOUNT,
        **runner,
        "hosts": [
            {
                "name": host.name,
                "address": host.address,
                "groups": ["slurm_controller", "galaxy"] if host.name.endswith("-head") else ["slurm_compute"],
            }
            for host in hosts
        ],
    }
    # Keep hosts of a larger earlier `up` in the record: they are still running.
    known = {h["name"] for h in inventory["hosts"]}
    inventory["hosts"] += [h for h in recorded.get("hosts", []) if h["name"] not in known]
    lab.write_hosts(inventory)
    log(f"{len(inventory['hosts'])} {release} hosts up in {time.monotonic() - started:.1f} s; inventory: {lab.hosts_file}")
    log(f"Galaxy job runner: {describe_runner(inventory)}")


def down(lab: Lab, purge_cache: bool) -> None:
    hosts_dir = lab.state_dir / "hosts"
    release = lab.read_hosts().get("release", "bookworm")
    for host_dir in sorted(hosts_dir.iterdir()) if hosts_dir.exists() else []:
        host = Host(lab, host_dir.name, release)
        power_off(host)
        host_network_down(host)
    network_down(lab)
    shutil.rmtree(lab.state_dir, ignore_errors=True)
    if purge_cache:
        shutil.rmtree(CACHE_ROOT, ignore_errors=True)
    log(f"{lab.name} is down")


def host_command(lab: Lab, name: str, action: str) -> None:
    recorded = lab.read_hosts()
    release = recorded.get("release")
    if not release or not (lab.state_dir / "hosts" / name).exists():
        raise SystemExit(f"lab: no host {name} in lab {lab.name}")
    host = Host(lab, name, release, recorded.get("ssh_user", "root"))
    started = time.monotonic()
    if action in ("stop", "reboot"):
        power_off(host)  # systemd's own shutdown, as `systemctl poweroff` on a real host
    if action in ("start", "reboot"):
        boot(host)
        wait_for_ssh(host, time.monotonic() + SSH_TIMEOUT)
    if action == "reboot":
        log(f"{name} rebooted: SSH answers again after {time.monotonic() - started:.1f} s")


def runner_command(lab: Lab, drmaa_tarball: str | None, cli: bool) -> None:
    """Show the lab's recorded Galaxy job runner, or record another (the next deploy switches to it)."""
    recorded = lab.read_hosts()
    if not recorded:
        raise SystemExit(f"lab: no lab {lab.name} ({lab.hosts_file}): `lab.py up` makes it")
    if cli or drmaa_tarball is not None:
        before = describe_runner(recorded)
        recorded.update(runner_record("" if cli else drmaa_tarball))
        lab.write_hosts(recorded)
        if describe_runner(recorded) != before:
            log(f"{lab.name}: Galaxy job runner recorded; the next deploy uses it (was: {before})")
    print(f"Galaxy job runner: {describe_runner(recorded)}")


def status(lab: Lab) -> None:
    recorded = lab.read_hosts()
    for entry in recorded.get("hosts", []):
        host = Host(lab, entry["name"], "")
        print(f"{entry['name']:16} {entry['address']:15} {'running' if host.pid() else 'stopped'}")
    if recorded:
        print(f"Galaxy job runner: {describe_runner(recorded)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=settings.LAB_NAME.get(), help="default: LAB_NAME, else %(default)s")
    parser.add_argument("--subnet", default=settings.LAB_SUBNET.get(), help="default: LAB_SUBNET, else %(default)s")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument("--nodes", type=int, default=settings.LAB_NODES.number(), help="default: LAB_NODES, else 2")
    up_parser.add_argument("--release", choices=RELEASES, default=settings.RELEASE.get(), help="default: RELEASE, else trixie")
    up_parser.add_argument("--ssh-user", default=settings.LAB_SSH_USER.get(),
                           help="the hosts' only SSH login; not root: a user with passwordless sudo (default: LAB_SSH_USER, else root)")
    up_parser.add_argument("--drmaa-tarball", default=settings.SLURM_DRMAA_TARBALL.get(), metavar="PATH",
                           help="a slurm-drmaa release tarball: a new lab records it and the DRMAA runner; '' (the default "
                                "without SLURM_DRMAA_TARBALL): the CLI runner. An existing lab keeps its runner (see `runner`)")
    runner_parser = sub.add_parser("runner", help="show or change the Galaxy job runner the lab records")
    choice = runner_parser.add_mutually_exclusive_group()
    choice.add_argument("--drmaa-tarball", metavar="PATH", help="record the DRMAA runner, slurm-drmaa built from PATH")
    choice.add_argument("--cli", action="store_true", help="record the CLI runner")
    down_parser = sub.add_parser("down")
    down_parser.add_argument("--purge-cache", action="store_true")
    for action in ("stop", "start", "reboot"):
        sub.add_parser(action).add_argument("host")
    sub.add_parser("status")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("lab: run as root (containers, namespaces and NAT need it)")
    lab = Lab(args.name, ipaddress.IPv4Network(args.subnet))
    if args.command == "up":
        up(lab, args.nodes, args.release, args.ssh_user, args.drmaa_tarball)
    elif args.command == "down":
        down(lab, args.purge_cache)
    elif args.command in ("stop", "start", "reboot"):
        host_command(lab, args.host, args.command)
    elif args.command == "runner":
        runner_command(lab, args.drmaa_tarball, args.cli)
    else:
        status(lab)


if __name__ == "__main__":
    main()
