"""The lab through other inventories than its own: a hand-written inventory file for the
same hosts (`make check INVENTORY=...`), and `pyinfra --dry`, which shows a change and
makes none, and prints no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.lab.conftest import HOST_NAMES, LAB_INVENTORY_FILE, ON_DEBIAN_12_ONLY, PROJECT
from tests.lab.secret_watch import leaks_in_text, secret_forms
from tests.lab.check_runs import make_check

# Release-independent, and the sudo-user lab's path: a hand-written inventory with _sudo, --dry through sudo.
pytestmark = [pytest.mark.lab, ON_DEBIAN_12_ONLY]
CONTROLLER = HOST_NAMES[0]
DRY_TIMEOUT = 600  # seconds for one `pyinfra --dry`


def hand_written_inventory(lab_data: dict, runner: str) -> str:
    """An inventory.py as an admin would write it for the lab's hosts: names, addresses, SSH settings."""
    user = lab_data.get("ssh_user", "root")
    ssh = {"ssh_user": user, "ssh_key": lab_data["ssh_key"], "ssh_strict_host_key_checking": "no",
           **({"_sudo": True} if user != "root" else {})}
    groups: dict[str, list] = {"slurm_controller": [], "slurm_compute": [], "galaxy": []}
    for host in lab_data["hosts"]:
        for group in host["groups"]:
            data = {"ssh_hostname": host["address"], **ssh}
            if group == "galaxy":
                data.update(shared_fs="existing", galaxy_job_runner=runner)
            groups[group].append((host["name"], data))
    return "".join(f"{group} = {hosts!r}\n" for group, hosts in groups.items())


def test_checks_pass_through_a_hand_written_inventory(first_deploy, deploy, tmp_path):
    lab_data = json.loads(deploy.lab_inventory.read_text())
    inventory = tmp_path / "site" / "inventory.py"
    inventory.parent.mkdir()
    inventory.write_text(hand_written_inventory(lab_data, "drmaa" if deploy.drmaa_tarball else "cli"))
    run = make_check(deploy, tmp_path, f"INVENTORY={inventory}")
    assert run.returncode == 0 and not run.failed, run.output[-5000:]
    assert run.passed >= 10 * len(HOST_NAMES), run.output[-3000:]


def dry_run(deploy, *data: str) -> str:
    """`pyinfra --dry` against the lab (with --data KEY=VALUE settings): its whole output."""
    dry = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pyinfra"), "--dry", LAB_INVENTORY_FILE, "deploy.py",
         *(arg for item in data for arg in ("--data", item))],
        cwd=PROJECT, env=deploy.env(), capture_output=True, text=True, timeout=DRY_TIMEOUT,
    )
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output[-5000:]
    return output


def slurm_conf_changes(output: str) -> list[str]:
    """The lines of pyinfra's "Detected changes" table for the slurm.conf operations."""
    table = output[output.index("--> Detected changes:"):]
    return [line for line in table.splitlines() if "slurm.conf (identical on every host)" in line]


def test_dry_run_shows_the_change_and_makes_none(first_deploy, deploy, lab_host):
    """`pyinfra --dry` with a changed setting lists slurm.conf as a change on every host
    (and does not without it), leaves every host's slurm.conf as it was, and prints no secret."""
    before = {name: lab_host(name).file("/etc/slurm/slurm.conf").sha256sum for name in HOST_NAMES}
    unchanged = slurm_conf_changes(dry_run(deploy))
    output = dry_run(deploy, 'slurm_config_extra={"MaxJobCount": 12345}')
    changed = slurm_conf_changes(output)
    assert len(changed) == len(unchanged) == 2, output[-5000:]  # the controller first, then the other hosts
    for line in changed:
        assert all(name in line for name in HOST_NAMES), line
    for line in unchanged:
        assert not any(name in line for name in HOST_NAMES), line
    assert {name: lab_host(name).file("/etc/slurm/slurm.conf").sha256sum for name in HOST_NAMES} == before
    assert "MaxJobCount=12345" not in lab_host(CONTROLLER).file("/etc/slurm/slurm.conf").content_string
    leaks = leaks_in_text(output, secret_forms(lab_host(CONTROLLER), lab_host(CONTROLLER)))
    assert not leaks, f"--dry printed {', '.join(leaks)}"
