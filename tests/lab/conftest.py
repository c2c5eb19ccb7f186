"""The lab for integration tests: a fresh set of bare hosts, deployed once per session.

The test lab has its own name and subnet, so `make test` never disturbs the
demo lab. KEEP_LAB=1 leaves it running afterwards for a look around.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(__file__).resolve().parents[2]
LAB_NAME = os.environ.get("TEST_LAB_NAME", "pgstest")
LAB_SUBNET = os.environ.get("TEST_LAB_SUBNET", "10.213.1.0/24")
NODES = int(os.environ.get("TEST_LAB_NODES", "2"))
RELEASE = os.environ.get("RELEASE", "trixie")
# A slurm-drmaa release tarball for the DRMAA runner tests (lab hosts reach no release downloads).
DRMAA_TARBALL = os.environ.get("SLURM_DRMAA_TARBALL", "")
# TEST_SLURM_ONLY=1 deploys the Slurm layers only (deploy_galaxy=false), for quick
# iterations on them; the Galaxy tests then fail. The default is the full stack.
SLURM_ONLY = os.environ.get("TEST_SLURM_ONLY") == "1"
HOST_NAMES = [f"{LAB_NAME}-head"] + [f"{LAB_NAME}-c{i}" for i in range(1, NODES + 1)]
COMPUTE_NAMES = HOST_NAMES[1:]
TIMINGS: dict[str, float] = {}
NOTES: list[str] = []  # printed after the timings (e.g. jobs in flight and how they ended)


def lab(*args: str) -> None:
    subprocess.run([sys.executable, str(PROJECT / "lab/lab.py"), "--name", LAB_NAME, "--subnet", LAB_SUBNET, *args], check=True)


@dataclass
class DeployRun:
    returncode: int
    result: dict | None  # pyinfra's --json output
    log: str  # everything pyinfra wrote to stderr
    seconds: float

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
    lab("down")
    lab("up", "--nodes", str(NODES), "--release", RELEASE)
    TIMINGS["lab up (bare hosts)"] = time.monotonic() - started
    yield Path(f"/var/lib/pgs-lab/{LAB_NAME}/hosts.json")
    if os.environ.get("KEEP_LAB") != "1":
        lab("down")


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("secrets")


class Deployer:
    """Runs the deploy against the test lab. The Galaxy job runner is the CLI one
    until a test switches `drmaa_tarball` on; later runs keep that choice."""

    def __init__(self, lab_inventory: Path, secrets_dir: Path):
        self.lab_inventory = lab_inventory
        self.secrets_dir = secrets_dir
        self.drmaa_tarball = ""

    def __call__(self, *extra: str) -> DeployRun:
        env = {**os.environ, "LAB_INVENTORY": str(self.lab_inventory), "PGS_SECRETS_DIR": str(self.secrets_dir),
               "SLURM_DRMAA_TARBALL": self.drmaa_tarball}
        started = time.monotonic()
        process = subprocess.run(
            [str(Path(sys.executable).parent / "pyinfra"), "-y", "--json",
             *(("--data", "deploy_galaxy=false") if SLURM_ONLY else ()), *extra, "inventory.py", "deploy.py"],
            cwd=PROJECT, env=env, capture_output=True, text=True,
        )
        seconds = time.monotonic() - started
        try:
            result = json.loads(process.stdout)
        except json.JSONDecodeError:
            result = None
        return DeployRun(process.returncode, result, process.stderr, seconds)


@pytest.fixture(scope="session")
def deploy(lab_inventory, secrets_dir) -> Deployer:
    return Deployer(lab_inventory, secrets_dir)


@pytest.fixture(scope="session")
def first_deploy(deploy) -> DeployRun:
    run = deploy()
    TIMINGS["fresh rollout"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    return run


@pytest.fixture(scope="session")
def lab_host(lab_inventory, first_deploy):
    """testinfra host of a lab host, by name, over SSH with the lab's key."""
    lab_data = json.loads(lab_inventory.read_text())
    addresses = {h["name"]: h["address"] for h in lab_data["hosts"]}
    cache: dict[str, testinfra.host.Host] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = testinfra.get_host(
                f"paramiko://root@{addresses[name]}?ssh_identity_file={lab_data['ssh_key']}&timeout=10",
                ssh_config=lab_data["ssh_config"],
            )
        return cache[name]

    return get


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("lab timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what:40} {seconds:7.1f} s")
    for note in NOTES:
        terminalreporter.write_line(note)
