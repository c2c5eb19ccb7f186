"""Facts this deploy reads from hosts (pyinfra FactBase subclasses)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.facts.pip import PIP_REGEX
from pyinfra.facts.util.packaging import parse_packages

from tasks.model import GalaxyJob, HostFacts
from tasks.model.database import GalaxyDatabaseState
from tasks.model.galaxy import JOB_STATES_IN_FLIGHT
from tasks.platform import POLICY_MARKER, POLICY_RC_D

# One round trip per host. Every line is key=value; the command always exits 0
# (a failing fact would fail the host), missing tools give empty values.
_PROFILE_COMMAND = r"""
echo "hostname=$(uname -n)"
echo "cpus=$(getconf _NPROCESSORS_ONLN)"
lscpu -p=CPU,SOCKET,CORE 2>/dev/null | grep -v '^#' | sed 's/^/cpu=/'
echo "performance_cpus=$(cat /sys/devices/cpu_core/cpus 2>/dev/null)"
awk '/^MemTotal:/ {print "memory_kb=" $2}' /proc/meminfo
. /etc/os-release 2>/dev/null; echo "codename=${VERSION_CODENAME:-}"
echo "slurm_version=$(dpkg-query -W -f='${Version}' slurm-client 2>/dev/null)"
echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
echo "python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
getent passwd | awk -F: '{print "user=" $1 ":" $3}'
getent group | awk -F: '{print "group=" $1 ":" $3}'
awk '$2 == "/sys/fs/cgroup" || $2 == "/sys/fs/cgroup/freezer" {split($4, o, ","); print "mount:" $2 "=" o[1]}' /proc/mounts
""" + f"""echo "policy_rc_d=$(test -e {POLICY_RC_D} && {{ grep -qF '{POLICY_MARKER}' {POLICY_RC_D} && echo ours || echo other; }})"
true
"""


class HostProfile(FactBase[HostFacts]):
    """Hardware, release, installed Slurm and cgroup mode of a host."""

    def command(self) -> str:
        return _PROFILE_COMMAND

    def process(self, output: list[str]) -> HostFacts:
        return parse_host_profile(output)


def parse_host_profile(lines: list[str]) -> HostFacts:
    values: dict[str, str] = {}
    accounts: dict[str, dict[str, int]] = {"user": {}, "group": {}}
    online: dict[int, tuple[str, str]] = {}  # online CPU -> (socket, core), as lscpu -p lists them
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key in accounts:
            name, _, number = value.rpartition(":")
            if number.isdigit():
                accounts[key][name] = int(number)
        elif key == "cpu":
            cpu, socket, core = (value.split(",") + ["", ""])[:3]
            if cpu.isdigit():
                online[int(cpu)] = (socket, core)
        else:
            values[key] = value
    cpus, sockets, cores_per_socket, threads_per_core = cpu_layout(list(online.values()), int(values.get("cpus") or 0))
    performance = cpu_list(values.get("performance_cpus", ""))
    performance_cores = (cpu_layout([online[cpu] for cpu in sorted(performance) if cpu in online])
                         if performance and performance != set(online) else None)
    return HostFacts(
        hostname=values["hostname"],
        cpus=cpus,
        sockets=sockets,
        cores_per_socket=cores_per_socket,
        threads_per_core=threads_per_core,
        performance_cores=performance_cores,
        # What `slurmd -C` reports as RealMemory: MemTotal in MiB, rounded down.
        memory_mb=int(values.get("memory_kb") or 0) // 1024,
        codename=values.get("codename", ""),
        slurm_version=values.get("slurm_version") or None,
        cgroup_fs=values.get("cgroup_fs", ""),
        cgroup_writable=_cgroup_writable(values),
        python=values.get("python", ""),
        policy_rc_d=values.get("policy_rc_d", ""),
        users=accounts["user"],
        groups=accounts["group"],
    )


def cpu_layout(cpus: list[tuple[str, str]], count: int = 0) -> tuple[int, int, int, int]:
    """(cpus, sockets, cores_per_socket, threads_per_core) of online CPUs given as (socket, core) pairs,
    counted as slurmd counts them (src/slurmd/common/xcpuinfo.c): sockets holding them, then threads
    per core = CPUs / cores and cores per socket = cores / sockets, each rounded down. `count`: the
    CPU count when lscpu listed none."""
    total = len(cpus) or count or 1
    sockets = len({socket for socket, _ in cpus}) or 1
    cores = len(set(cpus)) or total
    return total, sockets, max(cores // sockets, 1), max(total // cores, 1)


def cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-7,16-23") as a set of CPU numbers; empty when there is none."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _cgroup_writable(values: dict[str, str]) -> bool:
    """cgroup v2: the unified mount is writable; v1: the freezer hierarchy
    (what proctrack/cgroup uses) is, since systemd mounts the v1 tmpfs read-only."""
    if values.get("cgroup_fs") == "cgroup2fs":
        return values.get("mount:/sys/fs/cgroup") == "rw"
    return values.get("mount:/sys/fs/cgroup/freezer") == "rw"


# Galaxy's database in use, as galaxy.yml's database_connection names it (SQLite
# opened read-only; PostgreSQL through psycopg2 in Galaxy's venv, as the galaxy
# user: peer authentication on the local socket, or an existing server's URL read
# from galaxy.yml, so no URL or password is ever on a command line or in output).
# First line: the kind, users and jobs; then one line per job a handler still
# has to follow: id, state, job_runner_name, external id, whether its destination
# carries the CLI runner's job_plugin param, handler. No galaxy.yml: no lines.
_GALAXY_DATABASE_COMMAND = r"""
yml={galaxy_yml}
python={venv}/bin/python3
test -x "$python" || python=python3
test -r "$yml" && id -u {user} >/dev/null 2>&1 && runuser -u {user} -- "$python" - "$yml" <<'PY' || true
import json, re, sys
url = re.search(r'^\s*database_connection:\s*"?([^"\s]+)', open(sys.argv[1]).read(), re.M)
url = url.group(1) if url else ""
if url.startswith("sqlite:///"):
    import sqlite3
    kind, db = "sqlite", sqlite3.connect(f"file:{{url[len('sqlite:///'):].split('?')[0]}}?mode=ro", uri=True, timeout=30)
elif url.startswith(("postgresql", "postgres")):
    import psycopg2
    kind, db = "postgresql", psycopg2.connect(re.sub(r"^postgres(ql)?(\+psycopg2)?://", "postgresql://", url))
else:
    sys.exit()
def rows(sql):
    cursor = db.cursor()
    cursor.execute(sql)
    return cursor.fetchall()
try:
    counts = rows("SELECT (SELECT count(*) FROM galaxy_user), (SELECT count(*) FROM job)")[0]
except Exception:  # no tables yet: Galaxy has not started on it
    print("database", kind, 0, 0, sep="\t")
    sys.exit()
print("database", kind, *counts, sep="\t")
for job_id, state, runner_name, external_id, params, handler in rows(
        "SELECT id, state, job_runner_name, job_runner_external_id, destination_params, handler FROM job "
        "WHERE state IN ({states})"):
    if isinstance(params, memoryview):
        params = bytes(params)
    params = params if isinstance(params, dict) else json.loads(params or "{{}}")
    print(job_id, state, runner_name or "-", external_id or "-", int("job_plugin" in (params or {{}})), handler or "-", sep="\t")
PY
"""


class GalaxyDatabaseNow(FactBase[tuple[GalaxyDatabaseState, list[GalaxyJob]]]):
    """Galaxy's database in use (galaxy.yml's database_connection): what it holds, and the
    jobs its handlers follow in a runner. Read-only, as the galaxy user."""

    @staticmethod
    def default() -> tuple[GalaxyDatabaseState, list[GalaxyJob]]:
        return GalaxyDatabaseState(), []  # no galaxy.yml (or no galaxy user) yet

    def command(self, root: str, user: str = "galaxy") -> str:
        return _GALAXY_DATABASE_COMMAND.format(
            galaxy_yml=shlex.quote(f"{root}/config/galaxy.yml"), venv=shlex.quote(f"{root}/venv"), user=shlex.quote(user),
            states=", ".join(f"'{state}'" for state in JOB_STATES_IN_FLIGHT),
        )

    def process(self, output: list[str]) -> tuple[GalaxyDatabaseState, list[GalaxyJob]]:
        return parse_galaxy_database(output), parse_galaxy_jobs(output)


def parse_galaxy_database(lines: list[str]) -> GalaxyDatabaseState:
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        if len(fields) == 4 and fields[0] == "database" and fields[2].isdigit() and fields[3].isdigit():
            return GalaxyDatabaseState(fields[1], int(fields[2]), int(fields[3]))
    return GalaxyDatabaseState()


def parse_galaxy_jobs(lines: list[str]) -> list[GalaxyJob]:
    """Job lines of GalaxyDatabaseNow -> jobs. job_runner_name is the plugin id, maybe
    followed by "://..." (older URL form); a "slurm" job with the CLI runner's
    job_plugin param was sent by the CLI runner, without it by the DRMAA runner."""
    jobs = []
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        if len(fields) not in (5, 6) or not fields[0].isdigit():
            continue
        job_id, state, runner_name, external_id, cli = fields[:5]
        handler = fields[5] if len(fields) == 6 and fields[5] != "-" else ""
        plugin = "" if runner_name == "-" else runner_name.split(":", 1)[0]
        runner = ("cli" if cli == "1" else "drmaa") if plugin == "slurm" else ""
        jobs.append(GalaxyJob(int(job_id), state, plugin, runner, None if external_id == "-" else external_id, handler))
    return jobs


@dataclass(frozen=True)
class VenvFacts:
    """A Python venv as found on a host, and the host's python3 (each "major.minor", or "")."""

    path: str
    present: bool  # it has a pyvenv.cfg
    made_by: str  # pyvenv.cfg `version` (the Python that made it)
    made_by_executable: str  # pyvenv.cfg `executable` (or `home`)
    runs: str  # what <venv>/bin/python3 runs; "" when it does not start
    host_python: str

    @property
    def stale(self) -> bool:
        """Made by another Python than the host's python3 (e.g. Debian 12 -> 13 left a
        3.11 venv beside python3 3.13): its bin/python3 is gone or its packages are for
        another version, so pip cannot run in it."""
        if not self.present or not self.host_python:
            return False
        return self.runs != self.host_python or (bool(self.made_by) and self.made_by != self.host_python)


def _major_minor(version: str) -> str:
    return ".".join(version.strip().split(".")[:2])


class PythonVenv(FactBase[VenvFacts]):
    """The venv at `path`: which Python made it, whether its python3 runs, the host's python3."""

    def command(self, path: str) -> str:
        venv = shlex.quote(path)
        version = "import sys; print('%d.%d' % sys.version_info[:2])"
        return (
            f"echo path={venv}; "
            f"if [ -f {venv}/pyvenv.cfg ]; then echo present=1; "
            f"sed -n 's/^ *\\(version\\|version_info\\|executable\\|home\\) *= */\\1=/p' {venv}/pyvenv.cfg; fi; "
            f"echo runs=$({venv}/bin/python3 -c \"{version}\" 2>/dev/null); "
            f"echo host_python=$(python3 -c \"{version}\" 2>/dev/null); true"
        )

    def process(self, output: list[str]) -> VenvFacts:
        return parse_venv(output)


def parse_venv(lines: list[str]) -> VenvFacts:
    values: dict[str, str] = {}
    for line in lines:
        key, _, value = line.strip().partition("=")
        values.setdefault(key, value.strip())
    home = values.get("home", "")
    return VenvFacts(
        path=values.get("path", ""),
        present=values.get("present") == "1",
        made_by=_major_minor(values.get("version") or values.get("version_info") or ""),
        made_by_executable=values.get("executable") or (f"{home}/python3" if home else ""),
        runs=_major_minor(values.get("runs", "")),
        host_python=_major_minor(values.get("host_python", "")),
    )


class VenvPackages(FactBase[dict]):
    """The packages in the venv at `venv` ({name: {version}}, as pyinfra's PipPackages gives them),
    listed by `uv pip freeze` with the uv binary at `uv` (a third of `pip freeze`'s time for
    Galaxy's ~280 packages); {} while the venv or uv is missing."""

    default = dict

    def command(self, venv: str, uv: str) -> str:
        python = shlex.quote(f"{venv}/bin/python")
        return f"if [ -x {shlex.quote(uv)} ] && [ -x {python} ]; then {shlex.quote(uv)} pip freeze --no-config --quiet --python {python}; fi"

    def process(self, output: list[str]) -> dict:
        return parse_packages(PIP_REGEX, output)
