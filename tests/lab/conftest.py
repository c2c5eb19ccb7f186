"""The lab for integration tests: a fresh set of bare hosts, deployed once per session.

The test lab has its own name and subnet, so `make test` never disturbs the
demo lab. KEEP_LAB=1 leaves it running afterwards for a look around.
TEST_LAB_SSH_USER=NAME boots hosts whose only SSH login is NAME with sudo
(`lab.py up --ssh-user`): the deploy and these tests then go through sudo.
Tests that need labs of their own (two clusters at once) boot them with `LabHosts`.
pyinfra reaches the lab through its own inventory, LAB_INVENTORY_FILE (lab/inventory.py),
told the lab's hosts.json in LAB_INVENTORY.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import testinfra

from tests.lab.galaxy_jobs import GalaxyJobs
from tests.lab.secret_watch import ReadableFile, SecretWatch, testinfra_host

PROJECT = Path(__file__).resolve().parents[2]
LAB_NAME = os.environ.get("TEST_LAB_NAME", "pgstest")
LAB_SUBNET = os.environ.get("TEST_LAB_SUBNET", "10.213.1.0/24")
NODES = int(os.environ.get("TEST_LAB_NODES", "2"))
SSH_USER = os.environ.get("TEST_LAB_SSH_USER", "root")
RELEASE = os.environ.get("RELEASE", "trixie")
# What runs on one release only (CI runs both; these cases do not depend on the release):
# Galaxy's jobs in flight (test_8) and the two concurrent clusters (test_9).
ON_DEBIAN_13_ONLY = pytest.mark.skipif(RELEASE != "trixie", reason="run on Debian 13 (the default lab) only, to keep CI short")
# A slurm-drmaa release tarball for the DRMAA runner tests (lab hosts reach no release downloads).
DRMAA_TARBALL = os.environ.get("SLURM_DRMAA_TARBALL", "")
# TEST_SLURM_ONLY=1 deploys the Slurm layers only (deploy_galaxy=false), for quick
# iterations on them; the Galaxy tests then fail. The default is the full stack.
SLURM_ONLY = os.environ.get("TEST_SLURM_ONLY") == "1"
HOST_NAMES = [f"{LAB_NAME}-head"] + [f"{LAB_NAME}-c{i}" for i in range(1, NODES + 1)]
COMPUTE_NAMES = HOST_NAMES[1:]
# The lab's inventory for pyinfra and for `make check` (the admin's inventory.py lists no lab host).
LAB_INVENTORY_FILE = "lab/inventory.py"
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

    def up(self) -> None:
        """Fresh bare hosts: whatever an earlier run left under this name goes first."""
        self.lab("down")
        self.lab("up", "--nodes", str(self.nodes), "--release", self.release, "--ssh-user", self.ssh_user)

    def down(self) -> None:
        self._hosts.clear()
        self.lab("down")

    @property
    def inventory(self) -> Path:
        return Path(f"/var/lib/pgs-lab/{self.name}/hosts.json")

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
    TEST_LAB.up()
    TIMINGS["lab up (bare hosts)"] = time.monotonic() - started
    yield TEST_LAB.inventory
    if os.environ.get("KEEP_LAB") != "1":
        TEST_LAB.down()


class Deployer:
    """Runs the deploy against the test lab. The Galaxy job runner is the CLI one
    until a test switches `drmaa_tarball` on; later runs keep that choice."""

    def __init__(self, lab_inventory: Path):
        self.lab_inventory = lab_inventory
        self.drmaa_tarball = ""

    def env(self) -> dict[str, str]:
        return {**os.environ, "LAB_INVENTORY": str(self.lab_inventory), "SLURM_DRMAA_TARBALL": self.drmaa_tarball}

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
