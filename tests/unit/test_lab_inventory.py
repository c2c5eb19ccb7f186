"""lab/inventory.py: hosts.json as `lab/lab.py up` writes it, to pyinfra groups and data."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from pyinfra.api.exceptions import PyinfraError

from checks.cluster import CheckedCluster, load_inventory

PROJECT = Path(__file__).resolve().parents[2]
LAB_INVENTORY = PROJECT / "lab/inventory.py"


def write_lab(tmp_path, **lab_fields) -> Path:
    hosts = {
        "lab": "t", "release": "trixie", "ssh_key": "/k", "ssh_config": "/c", "shared_dir": "/srv/galaxy",
        "hosts": [{"name": "t-head", "address": "10.9.0.10", "groups": ["slurm_controller", "galaxy"]},
                  {"name": "t-c1", "address": "10.9.0.11", "groups": ["slurm_compute"]}],
        **lab_fields,
    }
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(hosts))
    return path


def lab_groups(tmp_path, monkeypatch, **lab_fields) -> dict:
    monkeypatch.setenv("LAB_INVENTORY", str(write_lab(tmp_path, **lab_fields)))
    monkeypatch.delenv("SLURM_DRMAA_TARBALL", raising=False)
    inventory = runpy.run_path(str(LAB_INVENTORY))
    return {group: dict(inventory[group]) for group in ("slurm_controller", "slurm_compute", "galaxy")}


@pytest.mark.parametrize("fields", [{}, {"ssh_user": "root"}], ids=["no ssh_user (older lab)", "root"])
def test_root_lab_logs_in_as_root_without_sudo(tmp_path, monkeypatch, fields):
    groups = lab_groups(tmp_path, monkeypatch, **fields)
    for group in groups.values():
        for data in group.values():
            assert data["ssh_user"] == "root" and "_sudo" not in data


def test_sudo_user_lab_logs_in_as_that_user_and_sudoes_everything(tmp_path, monkeypatch):
    groups = lab_groups(tmp_path, monkeypatch, ssh_user="admin")
    assert groups["slurm_compute"]["t-c1"]["ssh_user"] == "admin"
    assert groups["slurm_compute"]["t-c1"]["_sudo"] is True
    galaxy = groups["galaxy"]["t-head"]
    assert galaxy["ssh_user"] == "admin" and galaxy["_sudo"] is True and galaxy["galaxy_job_runner"] == "cli"


def test_lab_name_picks_the_lab(monkeypatch):
    monkeypatch.delenv("LAB_INVENTORY", raising=False)
    monkeypatch.setenv("LAB_NAME", "no-such-lab")
    with pytest.raises(PyinfraError, match="no lab at /var/lib/pgs-lab/no-such-lab/hosts.json: boot it with `make lab-up`"):
        runpy.run_path(str(LAB_INVENTORY))


def test_admins_inventory_has_no_lab_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_INVENTORY", str(write_lab(tmp_path)))
    inventory = runpy.run_path(str(PROJECT / "inventory.py"))
    assert [name for name, _ in inventory["slurm_compute"]] == ["node1.example.org", "node2.example.org"]


def test_project_group_data_applies_to_the_lab_inventory(tmp_path, monkeypatch):
    """pyinfra reads <cwd>/group_data for an inventory file elsewhere: the lab gets the project's settings,
    and its host data (the job runner) wins over group_data/galaxy.py."""
    monkeypatch.setenv("LAB_INVENTORY", str(write_lab(tmp_path, ssh_user="admin")))
    monkeypatch.delenv("SLURM_DRMAA_TARBALL", raising=False)
    cluster = CheckedCluster(load_inventory(str(LAB_INVENTORY), cwd=str(PROJECT)))
    head = cluster.get("t-head")
    assert head.roles == {"controller", "galaxy"}
    assert head.data["slurm_partitions"][0]["name"] == "debug"  # group_data/all.py
    assert head.data["galaxy_root"] == "/srv/galaxy" and head.data["galaxy_job_runner"] == "cli"
    assert (head.connection.hostname, head.connection.user, head.connection.key, head.connection.sudo) == \
        ("10.9.0.10", "admin", "/k", True)
    assert [h.name for h in cluster.with_role("compute")] == ["t-c1"]
