"""lab/inventory.py: hosts.json as `lab/lab.py up` writes it, to pyinfra groups and data; the Galaxy
job runner the lab records (lab/lab.py writes it, the inventory reads it); lab/settings.py's paths."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from pyinfra.api.exceptions import PyinfraError

from checks.cluster import CheckedCluster, load_inventory
from lab import lab as lab_script
from lab import settings

PROJECT = Path(__file__).resolve().parents[2]
LAB_INVENTORY = PROJECT / "lab/inventory.py"


@pytest.fixture(autouse=True)
def no_lab_variables(monkeypatch):
    """Each case sets what it needs: none of the lab's variables of the shell running the tests."""
    for knob in settings.KNOBS:
        monkeypatch.delenv(knob.name, raising=False)


def write_lab(tmp_path, **lab_fields) -> Path:
    hosts = {
        "lab": "t", "release": "trixie", "ssh_key": "/k", "ssh_config": "/c", "shared_dir": "/srv/galaxy",
        "galaxy_job_runner": "cli", "slurm_drmaa_tarball": None,
        "hosts": [{"name": "t-head", "address": "10.9.0.10", "groups": ["slurm_controller", "galaxy"]},
                  {"name": "t-c1", "address": "10.9.0.11", "groups": ["slurm_compute"]}],
        **lab_fields,
    }
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(hosts))
    return path


def lab_groups(tmp_path, monkeypatch, **lab_fields) -> dict:
    monkeypatch.setenv("LAB_INVENTORY", str(write_lab(tmp_path, **lab_fields)))
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
    monkeypatch.setenv("LAB_NAME", "no-such-lab")
    with pytest.raises(PyinfraError, match="no lab at /var/lib/pgs-lab/no-such-lab/hosts.json: boot it with `make lab-up`"):
        runpy.run_path(str(LAB_INVENTORY))


def test_the_lab_state_root_moves_every_lab_and_an_empty_variable_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE_ROOT", str(tmp_path))
    monkeypatch.setenv("LAB_INVENTORY", "")  # as the Makefile exports an unset variable
    assert settings.hosts_file("x") == tmp_path / "x/hosts.json" == lab_script.Lab("x", None).hosts_file
    assert settings.lab_inventory() == tmp_path / "pgs/hosts.json"
    monkeypatch.setenv("LAB_INVENTORY", "/elsewhere/hosts.json")
    assert settings.lab_inventory() == Path("/elsewhere/hosts.json")


@pytest.mark.parametrize("environment", ["", "/some/other/slurm-drmaa.tar.gz"], ids=["no tarball", "another tarball"])
def test_the_runner_the_lab_records_is_the_runner_whatever_the_environment(tmp_path, monkeypatch, environment):
    """A lab made with a slurm-drmaa tarball keeps the DRMAA runner on a plain `pyinfra lab/inventory.py deploy.py`
    whose shell has no SLURM_DRMAA_TARBALL (or another one); a lab made without one keeps the CLI runner."""
    monkeypatch.setenv("SLURM_DRMAA_TARBALL", environment)
    drmaa = lab_groups(tmp_path, monkeypatch, galaxy_job_runner="drmaa", slurm_drmaa_tarball="/shared/slurm-drmaa-1.1.6.tar.gz")
    head = drmaa["galaxy"]["t-head"]
    assert head["galaxy_job_runner"] == "drmaa" and head["slurm_drmaa"] == {"tarball": "/shared/slurm-drmaa-1.1.6.tar.gz"}
    assert head["shared_fs"] == "existing" and "galaxy_job_runner" not in drmaa["slurm_compute"]["t-c1"]
    cli = lab_groups(tmp_path, monkeypatch)["galaxy"]["t-head"]
    assert cli["galaxy_job_runner"] == "cli" and "slurm_drmaa" not in cli


def test_a_lab_that_records_no_runner_is_refused_with_the_way_to_record_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_DRMAA_TARBALL", "/shared/slurm-drmaa-1.1.6.tar.gz")
    with pytest.raises(PyinfraError, match=r"records no Galaxy job runner .*lab.py --name t runner --drmaa-tarball PATH"):
        lab_groups(tmp_path, monkeypatch, galaxy_job_runner=None, slurm_drmaa_tarball=None)


def test_lab_py_records_the_tarball_a_new_lab_is_given_and_an_existing_lab_keeps_its_runner(tmp_path, monkeypatch, capsys):
    tarball = tmp_path / "slurm-drmaa-1.1.6.tar.gz"
    tarball.write_bytes(b"tarball")
    monkeypatch.chdir(tmp_path)
    drmaa = {"galaxy_job_runner": "drmaa", "slurm_drmaa_tarball": str(tarball)}
    cli = {"galaxy_job_runner": "cli", "slurm_drmaa_tarball": None}
    lab = lab_script.Lab("t", None)
    assert lab_script.runner_for_up(lab, {}, tarball.name) == drmaa  # recorded by its absolute path
    assert lab_script.runner_for_up(lab, {}, "") == cli
    with pytest.raises(SystemExit, match="no slurm-drmaa tarball at missing.tar.gz"):
        lab_script.runner_for_up(lab, {}, "missing.tar.gz")
    # `up` again (make lab-up) without SLURM_DRMAA_TARBALL: the lab stays on DRMAA, and says how to change it.
    assert lab_script.runner_for_up(lab, {"release": "trixie", **drmaa}, "") == drmaa
    assert f"t keeps the Galaxy job runner it was made with, drmaa (slurm-drmaa built from {tarball})" in capsys.readouterr().err
    assert lab_script.runner_for_up(lab, {"release": "trixie", **cli}, str(tarball)) == cli
    # A lab made before labs recorded their runner takes the one given.
    assert lab_script.runner_for_up(lab, {"release": "trixie"}, str(tarball)) == drmaa


def test_lab_py_runner_changes_the_record_the_inventory_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_STATE_ROOT", str(tmp_path))
    monkeypatch.setenv("LAB_NAME", "t")
    tarball = tmp_path / "slurm-drmaa-1.1.6.tar.gz"
    tarball.write_bytes(b"tarball")
    lab = lab_script.Lab("t", None)
    lab.state_dir.mkdir()
    lab.hosts_file.write_text(write_lab(tmp_path).read_text())
    lab_script.runner_command(lab, str(tarball), cli=False)
    assert "Galaxy job runner: drmaa (slurm-drmaa built from" in capsys.readouterr().out
    head = dict(runpy.run_path(str(LAB_INVENTORY))["galaxy"])["t-head"]
    assert head["galaxy_job_runner"] == "drmaa" and head["slurm_drmaa"] == {"tarball": str(tarball)}
    lab_script.runner_command(lab, None, cli=True)
    assert "Galaxy job runner: cli (the lab was given no slurm-drmaa tarball" in capsys.readouterr().out
    assert dict(runpy.run_path(str(LAB_INVENTORY))["galaxy"])["t-head"]["galaxy_job_runner"] == "cli"
    assert json.loads(lab.hosts_file.read_text())["hosts"][0]["name"] == "t-head"  # the rest of the record kept


def test_admins_inventory_has_no_lab_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_INVENTORY", str(write_lab(tmp_path)))
    inventory = runpy.run_path(str(PROJECT / "inventory.py"))
    assert [name for name, _ in inventory["slurm_compute"]] == ["node1.example.org", "node2.example.org"]


def test_the_lab_inventory_loads_as_pyinfra_loads_it(tmp_path, monkeypatch):
    """Loaded as pyinfra loads it from the checkout (<cwd>/group_data applies; it sets nothing since every
    default lives in tasks/model/settings.py), the lab's host data is there: SSH through sudo, the runner."""
    monkeypatch.setenv("LAB_INVENTORY", str(write_lab(tmp_path, ssh_user="admin")))
    cluster = CheckedCluster(load_inventory(str(LAB_INVENTORY), cwd=str(PROJECT)))
    head = cluster.get("t-head")
    assert head.roles == {"controller", "galaxy"}
    assert head.data["shared_fs"] == "existing" and head.data["galaxy_job_runner"] == "cli"
    assert (head.connection.hostname, head.connection.user, head.connection.key, head.connection.sudo) == \
        ("10.9.0.10", "admin", "/k", True)
    assert [h.name for h in cluster.with_role("compute")] == ["t-c1"]
