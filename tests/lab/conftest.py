"""The lab for integration tests: a fresh set of bare hosts, deployed once per session.

The test lab has its own name and subnet (TEST_LAB_NAME, TEST_LAB_SUBNET), so `make test`
never disturbs the demo lab. KEEP_LAB=1 leaves it running afterwards for a look around.
TEST_LAB_SSH_USER=NAME boots hosts whose only SSH login is NAME with sudo
(`lab.py up --ssh-user`): the deploy and these tests then go through sudo.
Tests that need labs of their own (two clusters at once) boot them with `LabHosts`.
pyinfra reaches the lab through its own inventory, LAB_INVENTORY_FILE (lab/inventory.py),
told the lab's hosts.json in LAB_INVENTORY. Every variable read here: lab/settings.py.

The Galaxy job runner is the lab's record (hosts.json), as for the demo lab: the test lab
is made with FIRST_RUNNER (`lab.py up --drmaa-tarball`), and a test that wants the DRMAA
runner sets `deploy.drmaa_tarball = DRMAA_TARBALL`, which records it in the lab
(`lab.py runner`): every later run through lab/inventory.py, the Deployer's, `make check`'s
or a test's own pyinfra command, then deploys or expects the DRMAA runner.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import testinfra

from lab import settings
from tests.lab.galaxy_jobs import GalaxyJobs
from tests.lab.secret_watch import ReadableFile, SecretWatch, testinfra_host

PROJECT = Path(__file__).resolve().parents[2]
LAB_NAME = settings.TEST_LAB_NAME.get()
LAB_SUBNET = settings.TEST_LAB_SUBNET.get()
NODES = settings.TEST_LAB_NODES.number()
SSH_USER = settings.TEST_LAB_SSH_USER.get()
RELEASE = settings.RELEASE.get()
# What runs on one release only: CI runs both side by side, and a case that does not depend on
# the release (Slurm 22.05 or 24.11, Python 3.11 or 3.13, PostgreSQL 15 or 17) runs on one of
# them, the one that has room (each module says which and why). The Debian 12 lab is reached
# through a sudo-only user, so cases whose path goes through sudo run there.
ON_DEBIAN_13_ONLY = pytest.mark.skipif(RELEASE != "trixie", reason="release-independent: run on Debian 13 only, to keep CI short")
ON_DEBIAN_12_ONLY = pytest.mark.skipif(RELEASE != "bookworm",
                                       reason="release-independent: run on Debian 12 (the sudo-user lab) only, to keep CI short")
# A slurm-drmaa release tarball for the DRMAA runner tests (lab hosts reach no release downloads).
DRMAA_TARBALL = settings.SLURM_DRMAA_TARBALL.get()
# REQUIRE_DRMAA=1 (CI): the DRMAA tests fail without DRMAA_TARBALL instead of being skipped.
REQUIRE_DRMAA = settings.REQUIRE_DRMAA.on()
# The first deploy's Galaxy job runner. The CLI runner on Debian 12, whose test_04 then proves the
# switch to DRMAA (slurm-drmaa built on a running cluster); the DRMAA runner on Debian 13, whose
# test_08 proves the switch to the CLI runner and back. CI runs both first installs and both switches.
FIRST_RUNNER = "drmaa" if RELEASE == "trixie" and os.path.isfile(DRMAA_TARBALL) else "cli"
# TEST_SLURM_ONLY=1 deploys the Slurm layers only (deploy_galaxy=false), for quick
# iterations on them; the Galaxy tests then fail. The default is the full stack.
SLURM_ONLY = settings.TEST_SLURM_ONLY.on()
KEEP_LAB = settings.KEEP_LAB.on()
HOST_NAMES = [f"{LAB_NAME}-head"] + [f"{LAB_NAME}-c{i}" for i in range(1, NODES + 1)]
COMPUTE_NAMES = HOST_NAMES[1:]
# The lab's inventory for pyinfra and for `make check` (the admin's inventory.py lists no lab host).
LAB_INVENTORY_FILE = "lab/inventory.py"
# The deploy's report line of its Galaxy upload job through the default destination.
GALAXY_THROUGH_SLURM = re.compile(
    r"Galaxy job \w+ \(destination slurm, runner slurm, handler handler\d+\) = Slurm job \d+ \(g\d+_+DATA_FETCH_+\w+\) "
    r"on (?P<node>\S+) as galaxy: COMPLETED"
)
TIMINGS: dict[str, float] = {}
NOTES: list[str] = []  # printed after the timings (e.g. jobs in flight and how they ended)


@dataclass
class LabHosts:
    """One lab of `lab/lab.py`: its hosts (NAME-head, NAME-c1..cN), booted fresh
    by `up`, and testinfra handles on them (through sudo when ssh_user is not root)."""

    name: str
    subnet: str
    nodes: int
    ssh_user: str = SSH_USER
    release: str = RELEASE
    _hosts: dict = field(default_factory=dict, repr=False)

    def lab(self, *args: str) -> None:
        subprocess.run([sys.executable, str(PROJECT / "lab/lab.py"), "--name", self.name, "--subnet", self.subnet, *args],
                       check=True)

    def up(self, drmaa_tarball: str = "") -> None:
        """Fresh bare hosts: whatever an earlier run left under this name goes first. The lab
        records the DRMAA runner with `drmaa_tarball`, else the CLI runner, whatever
        SLURM_DRMAA_TARBALL holds (see `Deployer.drmaa_tarball`)."""
        self.lab("down")
        self.lab("up", "--nodes", str(self.nodes), "--release", self.release, "--ssh-user", self.ssh_user,
                 f"--drmaa-tarball={drmaa_tarball}")

    def down(self) -> None:
        self._hosts.clear()
        self.lab("down")

    def reboot(self, name: str) -> float:
        """Reboot host NAME as a real host reboots (`lab.py reboot`); seconds until SSH answers again."""
        started = time.monotonic()
        self._hosts.pop(name, None)  # its SSH connection ends with it
        self.lab("reboot", name)
        return time.monotonic() - started

    @property
    def inventory(self) -> Path:
        return settings.hosts_file(self.name)

    @property
    def host_names(self) -> list[str]:
        return [f"{self.name}-head"] + [f"{self.name}-c{i}" for i in range(1, self.nodes + 1)]

    def host(self, name: str) -> testinfra.host.Host:
        """testinfra host of NAME, over SSH with the lab's key, as the lab's SSH user."""
        if name not in self._hosts:
            self._hosts[name] = testinfra_host(json.loads(self.inventory.read_text()), name)
        return self._hosts[name]


TEST_LAB = LabHosts(LAB_NAME, LAB_SUBNET, NODES)


def lab(*args: str) -> None:
    TEST_LAB.lab(*args)


@dataclass
class DeployRun:
    returncode: int
    result: dict | None  # pyinfra's --json output
    log: str  # everything pyinfra wrote to stderr
    seconds: float
    readable_files: list[ReadableFile] = field(default_factory=list)  # seen by a SecretWatch during the run

    @property
    def changes(self) -> int:
        return self.result["results"]["totals"]["success"]

    def changed_operations(self) -> list[str]:
        return [f"{op['name']} on {op['success']}" for op in self.result["results"]["operations"] if op["success"]]


@pytest.fixture(scope="session")
def lab_inventory(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the lab tests boot containers and need root: run `make test` as root")
    started = time.monotonic()
    TEST_LAB.up(drmaa_tarball=DRMAA_TARBALL if FIRST_RUNNER == "drmaa" else "")
    TIMINGS["lab up (bare hosts)"] = time.monotonic() - started
    yield TEST_LAB.inventory
    if not KEEP_LAB:
        TEST_LAB.down()


class Deployer:
    """Runs the deploy against a lab (LAB_INVENTORY: its hosts.json). The Galaxy job runner is
    the one the lab records, the CLI one for a lab `LabHosts` made, until a test sets
    `drmaa_tarball`; later runs keep that choice."""

    def __init__(self, lab_inventory: Path):
        self.lab_inventory = Path(lab_inventory)

    @property
    def drmaa_tarball(self) -> str:
        """The slurm-drmaa tarball the lab records ("": the CLI runner)."""
        return json.loads(self.lab_inventory.read_text()).get("slurm_drmaa_tarball") or ""

    @drmaa_tarball.setter
    def drmaa_tarball(self, tarball: str) -> None:
        """Record the DRMAA runner with TARBALL in the lab ("": the CLI runner), as `lab.py runner` does:
        the next run through lab/inventory.py, whoever starts it, switches Galaxy over."""
        name = json.loads(self.lab_inventory.read_text())["lab"]
        assert settings.hosts_file(name) == self.lab_inventory, f"{self.lab_inventory} is not lab {name}'s record"
        subprocess.run([sys.executable, str(PROJECT / "lab/lab.py"), "--name", name, "runner",
                        *(("--drmaa-tarball", tarball) if tarball else ("--cli",))], check=True)

    def env(self) -> dict[str, str]:
        """The environment of a run against the lab: its hosts.json, and nothing that could pick the runner."""
        env = {**os.environ, settings.LAB_INVENTORY.name: str(self.lab_inventory)}
        env.pop(settings.SLURM_DRMAA_TARBALL.name, None)
        return env

    def __call__(self, *extra: str) -> DeployRun:
        env = self.env()
        started = time.monotonic()
        process = subprocess.run(
            [str(Path(sys.executable).parent / "pyinfra"), "-y", "--json",
             *(("--data", "deploy_galaxy=false") if SLURM_ONLY else ()), *extra, LAB_INVENTORY_FILE, "deploy.py"],
            cwd=PROJECT, env=env, capture_output=True, text=True,
        )
        seconds = time.monotonic() - started
        try:
            result = json.loads(process.stdout)
        except json.JSONDecodeError:
            result = None
        return DeployRun(process.returncode, result, process.stderr, seconds)


@pytest.fixture(scope="session")
def deploy(lab_inventory) -> Deployer:
    return Deployer(lab_inventory)


@pytest.fixture(scope="session")
def first_deploy(deploy) -> DeployRun:
    """The fresh rollout, watched for files other users could read (test_6 looks for secrets in them)."""
    with SecretWatch.of_inventory(deploy.lab_inventory) as watch:
        run = deploy()
    run.readable_files = watch.records
    TIMINGS["fresh rollout"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    return run


@pytest.fixture(scope="session")
def galaxy_jobs(first_deploy, deploy, lab_inventory) -> GalaxyJobs:
    """Galaxy on the DRMAA runner with the lab's test tool loaded (a job that runs until released);
    every later deploy passes `galaxy_jobs.deploy_args()` to keep it."""
    deploy.drmaa_tarball = DRMAA_TARBALL
    jobs = GalaxyJobs(lab_inventory)
    jobs.install()
    run = deploy(*jobs.deploy_args())
    assert run.returncode == 0, run.log[-5000:]
    return jobs


@pytest.fixture(scope="session")
def lab_host(lab_inventory, first_deploy):
    """testinfra host of a lab host, by name (commands run through sudo on a sudo-user lab)."""
    return TEST_LAB.host


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("lab timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what:40} {seconds:7.1f} s")
    for note in NOTES:
        terminalreporter.write_line(note)
