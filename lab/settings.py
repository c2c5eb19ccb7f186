"""The lab's and the tests' knobs: every environment variable they read, declared once, with
its default and its meaning. lab/lab.py, lab/inventory.py, tests/lab and bench/bench.py read
them from here (`settings.LAB_NAME.get()`); the Makefile and .ci/run set them as before.
`python3 lab/settings.py` lists them with their values in this environment.

A variable set to the empty string counts as unset (its default applies): the Makefile
exports some variables empty (SLURM_DRMAA_TARBALL when ../shared/ holds no tarball).
Values are read when asked for, not when this module is imported.

The lab (lab/lab.py, lab/inventory.py; `make demo`, `make lab-up`, `make deploy`):
    LAB_NAME, LAB_SUBNET, LAB_NODES, LAB_SSH_USER, RELEASE, SLURM_DRMAA_TARBALL,
    LAB_INVENTORY, LAB_STATE_ROOT, LAB_CACHE_ROOT
The tests (tests/lab; `make test`, .ci/run):
    TEST_LAB_NAME, TEST_LAB_SUBNET, TEST_LAB_NODES, TEST_LAB_SSH_USER, TEST_SLURM_ONLY,
    KEEP_LAB, REQUIRE_DRMAA, TEST_TWO_CLUSTERS_NAMES, TEST_TWO_CLUSTERS_SUBNETS,
    WATCH_POLL, WATCH_COPY_BYTES
The Galaxy job runner is not a deploy-time knob of the lab: `lab.py up` records it in the
lab's hosts.json when it makes the lab (the DRMAA runner with SLURM_DRMAA_TARBALL's
tarball, else the CLI runner), lab/inventory.py reads it from there, and `lab.py runner`
changes it. A deploy of the lab does the same whatever its environment holds.

Knobs that live elsewhere (not read through this module):
    PGS_TIMINGS   tasks/timings.py (the deploy itself): with PGS_TIMINGS=FILE, any deploy appends
                  each operation's start and end to FILE as JSON lines (make bench sets it).
    PGS_PYPI_SIMPLE  tasks/galaxy_releases_pypi.py: the PyPI simple index the Galaxy release pins
                  are made and checked against (default https://pypi.org/simple).
    INVENTORY     checks/conftest.py and `make check`: the inventory file the host checks read
                  (default inventory.py; INVENTORY=lab/inventory.py for the lab).
Make variables (Makefile only, not environment variables of the lab's code):
    NODES (2: `make lab-up`/`make demo` compute hosts, passed as `lab.py up --nodes`), PYTHON,
    VENV, CHECK_REPORT, CHECK_ARGS, LAB_INVENTORY_FILE (lab/inventory.py). The Makefile also
    gives RELEASE, LAB_NAME, LAB_SUBNET, LAB_SSH_USER (and TEST_LAB_SSH_USER from it) and
    SLURM_DRMAA_TARBALL defaults of its own: the same values as here, except SLURM_DRMAA_TARBALL,
    ../shared/slurm-drmaa/slurm-drmaa-1.1.6.tar.gz beside the checkout when it exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Knob:
    """One environment variable: its name, its default (a string, as the environment has it) and what it means."""

    name: str
    default: str
    meaning: str

    def get(self) -> str:
        return os.environ.get(self.name) or self.default

    def number(self) -> int:
        return int(self.get())

    def seconds(self) -> float:
        return float(self.get())

    def on(self) -> bool:
        """A switch: on when set to 1."""
        return self.get() == "1"

    def items(self) -> list[str]:
        """A comma-separated list."""
        return self.get().split(",")


KNOBS: list[Knob] = []


def _knob(name: str, default: str, meaning: str) -> Knob:
    knob = Knob(name, default, " ".join(meaning.split()))
    KNOBS.append(knob)
    return knob


# --- the lab ----------------------------------------------------------------------------------

LAB_NAME = _knob("LAB_NAME", "pgs", """The lab lab/lab.py works on (--name) and lab/inventory.py reads: its hosts are
    NAME-head and NAME-c1..cN, its state LAB_STATE_ROOT/NAME. pgs is the demo lab (the Makefile exports LAB_NAME).""")
LAB_SUBNET = _knob("LAB_SUBNET", "10.213.0.0/24", """The lab's /24 (lab.py --subnet): gateway .1, head .10, compute hosts
    .11 on. Every lab on the machine needs its own (the tests use 10.213.1.0/24 and up).""")
LAB_NODES = _knob("LAB_NODES", "2", "Compute hosts `lab.py up` boots (--nodes); `make lab-up` passes make's NODES instead.")
LAB_SSH_USER = _knob("LAB_SSH_USER", "root", """The lab hosts' only SSH login (lab.py up --ssh-user): root, or a normal
    user with passwordless sudo, root's login then refused.""")
RELEASE = _knob("RELEASE", "trixie", """Debian release of the lab hosts: trixie (13) or bookworm (12): `lab.py up
    --release`, the test labs, `make bench`.""")
SLURM_DRMAA_TARBALL = _knob("SLURM_DRMAA_TARBALL", "", """A slurm-drmaa release tarball on this machine (the lab hosts
    reach no release downloads). `lab.py up` records it in the lab it makes (--drmaa-tarball's default): that lab's
    Galaxy then builds slurm-drmaa from it and uses the DRMAA runner; a lab made without one uses the CLI runner.
    The lab tests switch their lab to it (test_04); without it the DRMAA tests are skipped (fail with
    REQUIRE_DRMAA=1). The Makefile sets it to ../shared/slurm-drmaa/slurm-drmaa-1.1.6.tar.gz when that exists.
    Not read when the lab is deployed: lab/inventory.py takes the runner from the lab's hosts.json.""")
LAB_INVENTORY = _knob("LAB_INVENTORY", "", """The hosts.json lab/inventory.py reads, instead of LAB_NAME's
    (LAB_STATE_ROOT/LAB_NAME/hosts.json). The tests and bench/bench.py set it.""")
LAB_STATE_ROOT = _knob("LAB_STATE_ROOT", "/var/lib/pgs-lab", """Where labs live: NAME/hosts.json (the lab's record:
    hosts, SSH key and user, release, Galaxy job runner), NAME/id_ed25519, NAME/ssh_config, NAME/hosts/ (the hosts'
    roots), NAME/shared (bound at /srv/galaxy).""")
LAB_CACHE_ROOT = _knob("LAB_CACHE_ROOT", "/var/cache/pgs-lab", """Cached base images, apt archives and pip wheels,
    shared by every lab (`lab.py down --purge-cache` empties it).""")

# --- the tests --------------------------------------------------------------------------------

TEST_LAB_NAME = _knob("TEST_LAB_NAME", "pgstest", "The test lab's name (tests/lab; `make test`), apart from the demo lab's.")
TEST_LAB_SUBNET = _knob("TEST_LAB_SUBNET", "10.213.1.0/24", "The test lab's /24.")
TEST_LAB_NODES = _knob("TEST_LAB_NODES", "2", "The test lab's compute hosts.")
TEST_LAB_SSH_USER = _knob("TEST_LAB_SSH_USER", "root", """The test lab's SSH login (as LAB_SSH_USER; the Makefile
    sets it to LAB_SSH_USER, so `make test LAB_SSH_USER=admin` tests through sudo).""")
TEST_SLURM_ONLY = _knob("TEST_SLURM_ONLY", "", """1: the test deploys are Slurm layers only (--data
    deploy_galaxy=false), for quick iterations on them; the Galaxy tests then fail.""")
KEEP_LAB = _knob("KEEP_LAB", "", "1: the lab tests leave their labs running afterwards, for a look around.")
REQUIRE_DRMAA = _knob("REQUIRE_DRMAA", "", """1: the DRMAA runner tests fail, rather than skip, when
    SLURM_DRMAA_TARBALL names no file (.ci/run sets it).""")
TEST_TWO_CLUSTERS_NAMES = _knob("TEST_TWO_CLUSTERS_NAMES", "pgs2a,pgs2b", "test_09's two labs' names (comma-separated).")
TEST_TWO_CLUSTERS_SUBNETS = _knob("TEST_TWO_CLUSTERS_SUBNETS", "10.213.6.0/24,10.213.7.0/24",
                                  "test_09's two labs' /24s (comma-separated), clear of the demo, test and bench labs.")
WATCH_POLL = _knob("WATCH_POLL", "0.015", """Seconds between two looks of the secret watcher (tests/lab/secret_watch.py) at
    /tmp, /var/tmp and the SSH user's home on each lab host; read on the lab host, where secret_watch sets it.""")
WATCH_COPY_BYTES = _knob("WATCH_COPY_BYTES", "1048576", "How much of each readable file the secret watcher copies (bytes).")


# --- paths computed from the knobs ------------------------------------------------------------


def state_dir(name: str) -> Path:
    """The directory of lab NAME: its record, SSH key and config, hosts' roots, shared directory."""
    return Path(LAB_STATE_ROOT.get()) / name


def hosts_file(name: str) -> Path:
    """Lab NAME's hosts.json: what `lab.py up` made (hosts, SSH, release, Galaxy job runner)."""
    return state_dir(name) / "hosts.json"


def lab_inventory() -> Path:
    """The hosts.json lab/inventory.py reads: LAB_INVENTORY, else LAB_NAME's."""
    return Path(LAB_INVENTORY.get()) if LAB_INVENTORY.get() else hosts_file(LAB_NAME.get())


def cache_root() -> Path:
    return Path(LAB_CACHE_ROOT.get())


if __name__ == "__main__":
    for knob in KNOBS:
        print(f"{knob.name}={knob.get()}" + ("" if os.environ.get(knob.name) else "  (default)"))
        print(f"    {knob.meaning}\n")
