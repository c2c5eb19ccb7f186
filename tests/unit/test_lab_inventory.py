"""The lab part of inventory.py: hosts.json as `lab/lab.py up` writes it, to pyinfra groups."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def lab_groups(tmp_path, monkeypatch, **lab_fields) -> dict:
    hosts = {
        "lab": "t", "release": "trixie", "ssh_key": "/k", "ssh_config": "/c", "shared_dir": "/srv/galaxy",
        "hosts": [{"name": "t-head", "address": "10.9.0.10", "groups": ["slurm_controller", "galaxy"]},
                  {"name": "t-c1", "address": "10.9.0.11", "groups": ["slurm_compute"]}],
        **lab_fields,
    }
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(hosts))
    monkeypatch.setenv("LAB_INVENTORY", str(path))
    monkeypatch.delenv("SLURM_DRMAA_TARBALL", raising=False)
    inventory = runpy.run_path(str(PROJECT / "inventory.py"))
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
