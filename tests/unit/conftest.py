"""Builders for cluster-model inputs: hosts as the inventory and facts give them."""

from __future__ import annotations

import pytest
from pyinfra.connectors.ssh import SSHConnector

from tasks.model import HostFacts, InventoryHost

SSH_KEYS = frozenset(SSHConnector.data_meta)  # ssh_hostname, ssh_user, ...


def facts(hostname: str, cpus: int = 4, sockets: int = 1, threads: int = 1, memory_mb: int = 7900,
          codename: str = "bookworm", slurm_version: str | None = None, cgroup: str = "v1-ro",
          python: str = "3.11", users: dict | None = None, groups: dict | None = None) -> HostFacts:
    return HostFacts(
        hostname=hostname,
        cpus=cpus,
        sockets=sockets,
        cores_per_socket=cpus // sockets // threads,
        threads_per_core=threads,
        memory_mb=memory_mb,
        codename=codename,
        slurm_version=slurm_version,
        cgroup_fs="cgroup2fs" if cgroup == "v2" else "tmpfs",
        cgroup_writable=cgroup == "v2",
        python=python,
        users=users or {"root": 0, "munge": 100},
        groups=groups or {"root": 0, "munge": 101},
    )


def inventory_host(name: str, *groups: str, address: str = "10.0.0.1", data: dict | None = None, **fact_args) -> InventoryHost:
    return InventoryHost(
        name=name,
        groups=frozenset(groups),
        data={"ssh_hostname": address, **(data or {})},
        facts=facts(name, **fact_args),
        connector_keys=SSH_KEYS,
    )


# The Galaxy host of the small test clusters uses the CLI runner: the DRMAA
# default needs a slurm-drmaa checksum (tested in test_galaxy_model.py).
CLI_RUNNER = {"galaxy_job_runner": "cli"}


def small_cluster(compute: int = 2, galaxy: dict | None = None, **fact_args) -> list[InventoryHost]:
    head_data = {**CLI_RUNNER, **(galaxy or {})}
    hosts = [inventory_host("head", "slurm_controller", "galaxy", address="10.0.0.10", data=head_data, **fact_args)]
    hosts += [inventory_host(f"c{i}", "slurm_compute", address=f"10.0.0.{10 + i}", **fact_args) for i in range(1, compute + 1)]
    return hosts


@pytest.fixture
def hosts() -> list[InventoryHost]:
    return small_cluster()
