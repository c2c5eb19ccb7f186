"""Slurm accounting: the model's rules, slurm.conf's accounting lines, slurmdbd.conf."""

from __future__ import annotations

import os

import pytest

from tasks.accounting import native_password_hash, render_slurmdbd_conf
from tasks.common import render
from tasks.model import ClusterConfigError, build_cluster
from tasks.slurm import render_slurm_conf
from tasks.verify.slurm import parse_sacct
from tests.unit.conftest import inventory_host, small_cluster
from tests.unit.test_slurm_conf import settings_of


def password_file(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "dbpass"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def problems_of(hosts, settings) -> list[str]:
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(hosts, settings)
    return error.value.problems


def test_on_by_default_on_the_controller_with_local_mariadb(hosts):
    accounting = build_cluster(hosts, {}).accounting
    assert accounting.dbd_host.inventory_name == "head" and accounting.local_database
    assert (accounting.storage_address, accounting.storage_port, accounting.storage_user, accounting.storage_loc) \
        == ("localhost", 3306, "slurm", "slurm_acct_db")
    assert build_cluster(hosts, {}).job_acct_gather_type == "jobacct_gather/linux"  # read-only cgroups: linuxproc


def test_cgroup_process_tracking_gathers_through_cgroup():
    assert build_cluster(small_cluster(cgroup="v2"), {}).job_acct_gather_type == "jobacct_gather/cgroup"


def test_off(hosts):
    cluster = build_cluster(hosts, {"slurm_accounting": False})
    assert cluster.accounting is None
    conf = settings_of(render_slurm_conf(cluster))
    # jobs are still sampled without accounting: sstat, and memory enforcement without cgroups
    assert conf["JobAcctGatherType"] == ["jobacct_gather/linux"] and "AccountingStorageType" not in conf
    assert conf["JobAcctGatherParams"] == ["OverMemoryKill"]


def test_slurm_conf_points_at_slurmdbd(hosts):
    conf = settings_of(render_slurm_conf(build_cluster(hosts, {})))
    assert conf["AccountingStorageType"] == ["accounting_storage/slurmdbd"]
    assert conf["AccountingStorageHost"] == ["head"] and conf["AccountingStoragePort"] == ["6819"]
    assert conf["JobAcctGatherType"] == ["jobacct_gather/linux"]


def test_slurm_dbd_group_moves_slurmdbd():
    hosts = small_cluster() + [inventory_host("db", "slurm_dbd", address="10.0.0.30")]
    cluster = build_cluster(hosts, {})
    assert cluster.accounting.dbd_host.inventory_name == "db"
    assert settings_of(render_slurm_conf(cluster))["AccountingStorageHost"] == ["db"]


def test_two_dbd_hosts_refused():
    hosts = small_cluster() + [inventory_host(n, "slurm_dbd", address=a) for n, a in (("db1", "10.0.0.30"), ("db2", "10.0.0.31"))]
    assert any("group slurm_dbd: has 2 hosts (db1, db2)" in p for p in problems_of(hosts, {}))


def test_existing_server_needs_a_password_file(hosts):
    problems = problems_of(hosts, {"slurm_accounting_storage_host": "db.example.org"})
    assert any(p.startswith("slurm_accounting_storage_pass_file: needed with slurm_accounting_storage_host") for p in problems)


def test_existing_server(hosts, tmp_path):
    path = password_file(tmp_path, "s3cret-Pass\n")
    cluster = build_cluster(hosts, {"slurm_accounting_storage_host": "db.example.org", "slurm_accounting_storage_port": 3307,
                                    "slurm_accounting_storage_pass_file": path})
    text = render_slurmdbd_conf(cluster, "s3cret-Pass")
    conf = settings_of(text)
    assert conf["StorageHost"] == ["db.example.org"] and conf["StoragePort"] == ["3307"]
    assert conf["StoragePass"] == ["s3cret-Pass"] and conf["StorageType"] == ["accounting_storage/mysql"]
    assert not cluster.accounting.local_database


@pytest.mark.parametrize(("text", "mode", "expected"), [
    ("", 0o600, "is empty"),
    ("\nsecond line\n", 0o600, "is empty"),
    ("has space\n", 0o600, "has a space, '#', a quote or a backslash"),
    ("pw#comment\n", 0o600, "has a space, '#', a quote or a backslash"),
    ("fine\n", 0o644, "is readable by other users; chmod 600 it"),
])
def test_bad_password_files_refused(hosts, tmp_path, text, mode, expected):
    problems = problems_of(hosts, {"slurm_accounting_storage_pass_file": password_file(tmp_path, text, mode)})
    assert any(p.startswith("slurm_accounting_storage_pass_file:") and expected in p for p in problems), problems


def test_unreadable_password_file_refused(hosts, tmp_path):
    path = tmp_path / "dbpass"
    path.write_bytes(b"\xff\xfe not text\n")  # as root every mode is readable: a file that cannot be decoded
    os.chmod(path, 0o600)
    problems = problems_of(hosts, {"slurm_accounting_storage_pass_file": str(path)})
    assert any("cannot be read (UnicodeDecodeError" in p for p in problems), problems


def test_missing_password_file_refused(hosts, tmp_path):
    problems = problems_of(hosts, {"slurm_accounting_storage_pass_file": str(tmp_path / "nope")})
    assert any("does not exist" in p for p in problems)


@pytest.mark.parametrize(("settings", "expected"), [
    ({"slurm_accounting": "yes"}, "slurm_accounting: 'yes' is not True or False"),
    ({"slurm_accounting_storage_port": 0}, "slurm_accounting_storage_port: 0 is not a TCP port"),
    ({"slurm_accounting_storage_loc": "slurm-db"}, "slurm_accounting_storage_loc: 'slurm-db' is not a database name"),
])
def test_bad_settings_refused(hosts, settings, expected):
    assert any(p.startswith(expected) for p in problems_of(hosts, settings))


def test_slurmdbd_conf_local(hosts):
    conf = settings_of(render_slurmdbd_conf(build_cluster(hosts, {"slurm_cluster_name": "lab"}), "pw123"))
    assert conf["DbdHost"] == ["head"] and conf["DbdPort"] == ["6819"] and conf["SlurmUser"] == ["slurm"]
    assert conf["StorageHost"] == ["localhost"] and conf["StorageLoc"] == ["slurm_acct_db"]
    assert conf["StoragePass"] == ["pw123"] and conf["AuthType"] == ["auth/munge"]
    assert all(len(v) == 1 for v in conf.values())
    assert "PidFile" not in conf  # Debian 12 (the test hosts' release): the unit's default


def test_slurmdbd_pid_file_on_debian_13():
    cluster = build_cluster(small_cluster(codename="trixie"), {})
    assert settings_of(render_slurmdbd_conf(cluster, "pw"))["PidFile"] == ["/run/slurmdbd/slurmdbd.pid"]


def test_native_password_hash_is_mariadbs():
    # SELECT PASSWORD('testpw') on MariaDB 11.8 (Debian 13)
    assert native_password_hash("testpw") == "*032169CDF0B90AF8C00992D43D354E29A2EACB42"


def test_parse_sacct():
    assert parse_sacct("COMPLETED|0:0\n") == [("COMPLETED", "0:0")]
    assert parse_sacct("") == []


def test_supervisor_sets_slurm_drmaa_use_slurmdbd_only_when_asked():
    from tests.unit.test_galaxy import galaxy_of

    galaxy = galaxy_of()
    assert "SLURM_DRMAA_USE_SLURMDBD" not in render("supervisor-galaxy.conf.j2", galaxy=galaxy, group="gx")
    text = render("supervisor-galaxy.conf.j2", galaxy=galaxy, group="gx", slurm_drmaa_use_slurmdbd=True)
    assert 'SLURM_DRMAA_USE_SLURMDBD="1"' in text


def test_records_purged_after_their_time_and_archived_first(hosts):
    conf = settings_of(render_slurmdbd_conf(build_cluster(hosts, {}), "pw"))
    assert conf["PurgeJobAfter"] == ["12month"] and conf["PurgeStepAfter"] == ["1month"]
    assert conf["PurgeUsageAfter"] == ["24month"] and conf["ArchiveJobs"] == ["yes"]
    assert conf["ArchiveDir"] == ["/var/lib/slurm/accounting-archive"]
    kept = settings_of(render_slurmdbd_conf(build_cluster(hosts, {"slurm_accounting_purge": {"PurgeJobAfter": None},
                                                                   "slurm_accounting_archive_dir": None}), "pw"))
    assert "PurgeJobAfter" not in kept and kept["PurgeStepAfter"] == ["1month"]
    assert "ArchiveDir" not in kept and "ArchiveJobs" not in kept


@pytest.mark.parametrize(("settings", "expected"), [
    ({"slurm_accounting_purge": {"PurgeJobAfter": "1 year"}}, "slurm_accounting_purge: PurgeJobAfter='1 year' is not"),
    ({"slurm_accounting_purge": {"PurgeJobsAfter": "1month"}}, "slurm_accounting_purge: unknown PurgeJobsAfter"),
    ({"slurm_accounting_purge": "12month"}, "slurm_accounting_purge: must be a mapping"),
    ({"slurm_accounting_archive_dir": "archive"}, "slurm_accounting_archive_dir: 'archive' is not an absolute path"),
])
def test_purge_settings_refused_with_the_fix(hosts, settings, expected):
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(hosts, settings)
    assert expected in str(error.value)
