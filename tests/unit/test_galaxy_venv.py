"""Galaxy's venv made by another Python: read from pyvenv.cfg, refused or rebuilt."""

from __future__ import annotations

from tasks.facts import parse_venv
from tasks.galaxy.venv import venv_problems
from tasks.model import build_cluster
from tests.unit.conftest import small_cluster

# What PythonVenv prints for a venv made on the host (3.13), one left by Debian 12 (3.11,
# bin/python3 -> a python3.11 that is gone), and no venv yet.
HEALTHY = ["path=/srv/galaxy/venv", "present=1", "home=/usr/bin", "executable=/usr/bin/python3.13",
           "version=3.13.5", "runs=3.13", "host_python=3.13"]
FROM_BOOKWORM = ["path=/srv/galaxy/venv", "present=1", "home=/usr/bin", "version=3.11.2", "runs=", "host_python=3.13"]
# bin/python3 repointed at the host's python3: it starts, but the packages are 3.11's
REPOINTED = ["path=/srv/galaxy/venv", "present=1", "home=/usr/bin", "version=3.11.2", "runs=3.13", "host_python=3.13"]
ABSENT = ["path=/srv/galaxy/venv", "runs=", "host_python=3.13"]


def galaxy(**data):
    hosts = small_cluster(1, galaxy=data)
    return build_cluster(hosts, {}).galaxy


def test_parse_and_stale():
    healthy = parse_venv(HEALTHY)
    assert healthy.present and healthy.made_by == "3.13" and healthy.runs == "3.13" and not healthy.stale
    old = parse_venv(FROM_BOOKWORM)
    assert old.made_by == "3.11" and old.runs == "" and old.made_by_executable == "/usr/bin/python3" and old.stale
    assert parse_venv(REPOINTED).stale
    assert not parse_venv(ABSENT).present and not parse_venv(ABSENT).stale  # a first install
    # pyvenv.cfg of virtualenv says version_info
    assert parse_venv(["present=1", "version_info=3.11.2.final.0", "runs=", "host_python=3.13"]).made_by == "3.11"


def test_refused_by_default_with_the_fix():
    (problem,) = venv_problems(galaxy(), parse_venv(FROM_BOOKWORM))
    assert problem.startswith("galaxy_rebuild_venv: Galaxy's venv /srv/galaxy/venv on head was made by Python 3.11")
    assert "its bin/python3 does not start, and the host's python3 is 3.13" in problem
    assert "galaxy_rebuild_venv = True" in problem and "--data galaxy_rebuild_venv=true" in problem
    assert "/srv/galaxy/venv.<time>.pgs-backup" in problem and "config, data and secrets" in problem
    assert "its bin/python3 runs 3.13" in venv_problems(galaxy(), parse_venv(REPOINTED))[0]


def test_rebuild_on_request_and_healthy_venvs_pass():
    assert venv_problems(galaxy(galaxy_rebuild_venv=True), parse_venv(FROM_BOOKWORM)) == []
    assert venv_problems(galaxy(), parse_venv(HEALTHY)) == []
    assert venv_problems(galaxy(), parse_venv(ABSENT)) == []
    # a rebuild without installing Galaxy would leave an empty venv
    (problem,) = venv_problems(galaxy(galaxy_rebuild_venv=True, galaxy_install=False), parse_venv(FROM_BOOKWORM))
    assert problem.startswith("galaxy_install:") and "galaxy_install = True" in problem
