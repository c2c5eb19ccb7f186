"""A first install's one apt run per host: which packages, and which daemons wait for their layer."""

from __future__ import annotations

import subprocess

import pytest

from tasks.model import build_cluster, sha256_of
from tasks.packages import HELD_DAEMONS, _hold_policy, first_install, stack_packages
from tests.unit.conftest import inventory_host, small_cluster

GALAXY_HOST = ["nginx", "postgresql", "python3-venv", "supervisor"]  # the CLI runner: no slurm-drmaa


def test_every_layer_package_of_each_role():
    cluster = build_cluster(small_cluster(1), {})  # accounting on, MariaDB on the controller, the Galaxy host
    assert stack_packages(cluster, "head") == sorted(
        ["mariadb-server", "munge", "slurm-client", "slurmctld", "slurmdbd", *GALAXY_HOST])
    assert stack_packages(cluster, "c1") == ["munge", "slurm-client", "slurmd"]


def test_slurm_drmaa_build_tools_and_no_postgresql_with_an_existing_server(tmp_path):
    tarball = tmp_path / "slurm-drmaa-1.1.6.tar.gz"
    tarball.write_bytes(b"release")
    galaxy = {"galaxy_job_runner": "drmaa", "slurm_drmaa": {"tarball": str(tarball), "sha256": sha256_of(str(tarball))},
              "galaxy_database_url": "postgresql://galaxy@db.example.org/galaxy"}
    packages = stack_packages(build_cluster(small_cluster(1, galaxy=galaxy), {"slurm_accounting": False}), "head")
    assert packages == ["build-essential", "libslurm-dev", "munge", "nginx", "python3-venv", "slurm-client", "slurmctld",
                        "supervisor"]


def test_slurmdbd_and_mariadb_go_with_the_slurm_dbd_host():
    cluster = build_cluster(small_cluster(1) + [inventory_host("db", "slurm_dbd", address="10.0.0.30")], {})
    assert stack_packages(cluster, "head") == sorted(["munge", "slurm-client", "slurmctld", *GALAXY_HOST])
    assert stack_packages(cluster, "db") == ["mariadb-server", "munge", "slurmdbd"]


def test_no_accounting_no_database(tmp_path):
    assert stack_packages(build_cluster(small_cluster(1), {"slurm_accounting": False}), "head") == \
        sorted(["munge", "slurm-client", "slurmctld", *GALAXY_HOST])
    password = tmp_path / "pass"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    existing = build_cluster(small_cluster(1), {"slurm_accounting_storage_host": "db.example.org",
                                                 "slurm_accounting_storage_pass_file": str(password)})
    assert stack_packages(existing, "head") == sorted(["munge", "slurm-client", "slurmctld", "slurmdbd", *GALAXY_HOST])


def test_first_install_only_when_no_host_has_slurm():
    assert first_install(build_cluster(small_cluster(2), {}))
    hosts = small_cluster(2)
    hosts[2] = inventory_host("c2", "slurm_compute", address="10.0.0.12", slurm_version="22.05.8-4+deb12u3")
    assert not first_install(build_cluster(hosts, {}))


@pytest.mark.parametrize("name, refused", [
    ("munge", True), ("munge.service", True), ("slurmctld.service", True), ("slurmd", True), ("slurmdbd.service", True),
    ("mariadb.service", False), ("nginx", False), ("postgresql.service", False), ("slurmrestd.service", False),
])
def test_the_policy_refuses_only_the_held_daemons(tmp_path, name, refused):
    """policy-rc.d(8) run by sh as invoke-rc.d and deb-systemd-invoke call it: 101 forbids, 104 allows."""
    policy = tmp_path / "policy-rc.d"
    policy.write_text(_hold_policy(HELD_DAEMONS))
    assert subprocess.run(["sh", str(policy), name, "start"], check=False).returncode == (101 if refused else 104)
