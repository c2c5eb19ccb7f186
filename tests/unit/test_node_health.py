"""files/pgs-node-health, slurm.conf's HealthCheckProgram, run as slurmd runs it: against a directory
standing in for Galaxy's shared one, a real venv, and an `scontrol` on PATH that reports the node's
state and records what the check asks of it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tasks.common import project_file

HERE_PYTHON = "%d.%d" % sys.version_info[:2]
MARKER_TEXT = "pyinfra-galaxy-slurm: Galaxy's shared directory of cluster galaxy"


@pytest.fixture(scope="module")
def galaxy_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    venv.create(root / "venv", with_pip=False)
    return root / "venv"


def health_check(tmp_path: Path, galaxy_venv: Path, state: str, reason: str = "none", marker: str | None = MARKER_TEXT,
                 venv_python: str = HERE_PYTHON) -> list[str]:
    """Run the check once; the scontrol updates it made."""
    shared = tmp_path / "srv-galaxy"
    shared.mkdir(exist_ok=True)
    if marker is not None:
        (shared / ".pgs-shared").write_text(marker + "\n")
    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    calls.unlink(missing_ok=True)
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --oneliner ]; then echo "NodeName=n1 Arch=x86_64 State={state} ThreadsPerCore=1 Reason={reason}"; '
        f'else echo "$@" >> {shlex.quote(str(calls))}; fi\n')
    (bin_dir / "scontrol").chmod(0o755)
    conf = tmp_path / "node-health.conf"
    conf.write_text(f"SHARED_DIR={shlex.quote(str(shared))}\nVENV={shlex.quote(str(galaxy_venv))}\n"
                    f"VENV_PYTHON={venv_python}\nMARKER={shlex.quote(str(shared / '.pgs-shared'))}\n"
                    f"MARKER_TEXT={shlex.quote(MARKER_TEXT)}\nREASON_PREFIX=pgs-health:\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PGS_NODE_HEALTH_CONF": str(conf)}
    done = subprocess.run(["bash", str(project_file("pgs-node-health"))], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # slurmd drains a node whose health check fails: it never does
    return calls.read_text().splitlines() if calls.exists() else []


def test_a_healthy_node_is_left_alone(tmp_path, galaxy_venv):
    assert health_check(tmp_path, galaxy_venv, "IDLE") == []
    assert health_check(tmp_path, galaxy_venv, "MIXED") == []


def test_a_node_without_galaxys_shared_directory_is_drained_naming_it(tmp_path, galaxy_venv):
    (call,) = health_check(tmp_path, galaxy_venv, "ALLOCATED", marker=None)
    assert call.startswith("update nodename=") and " state=drain reason=pgs-health: " in call
    assert "srv-galaxy is not the Galaxy host's shared directory (.pgs-shared missing or another cluster's): mount it" in call
    (call,) = health_check(tmp_path, galaxy_venv, "IDLE", marker="pyinfra-galaxy-slurm: another cluster's")
    assert "state=drain" in call


def test_a_venv_this_hosts_python_cannot_run_drains_the_node(tmp_path, galaxy_venv):
    """A node left on another Debian release: bin/python leads to its own python3, another version."""
    # A venv made by another Python than the Galaxy host's: the Galaxy host's to rebuild, not this node's.
    assert health_check(tmp_path, galaxy_venv, "IDLE", venv_python="3.99") == []
    with open(galaxy_venv / "pyvenv.cfg") as cfg:
        text = cfg.read()
    try:
        (galaxy_venv / "pyvenv.cfg").write_text(text.replace(f"version = {HERE_PYTHON}", "version = 3.99"))
        (call,) = health_check(tmp_path, galaxy_venv, "IDLE", venv_python="3.99")
        assert f"Galaxy's venv needs Python 3.99, this host runs it with {HERE_PYTHON}" in call and "state=drain" in call
    finally:
        (galaxy_venv / "pyvenv.cfg").write_text(text)


def test_nodes_out_of_service_are_not_touched(tmp_path, galaxy_venv):
    """An admin's drain or down, and a node Slurm set down, keep their reasons."""
    for state in ("DRAINED", "IDLE+DRAIN", "DOWN", "DOWN*+DRAIN", "FAIL"):
        assert health_check(tmp_path, galaxy_venv, state, reason="disk swap [root@2026-12-08T01:00:00]", marker=None) == []
    assert health_check(tmp_path, galaxy_venv, "IDLE+DRAIN", reason="disk swap [root@2026-12-08T01:00:00]") == []


def test_only_its_own_drain_is_resumed_once_the_directory_is_back(tmp_path, galaxy_venv):
    (call,) = health_check(tmp_path, galaxy_venv, "IDLE+DRAIN", reason="pgs-health: /srv/galaxy is missing")
    assert call.endswith("state=resume")
