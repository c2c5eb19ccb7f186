"""Compute nodes described as slurmd describes them (`slurmd -C`), from what lscpu reads on a host:
SMT, several sockets, CPUs taken offline, Intel hybrid CPUs (Slurm 22.05 counts every CPU, 24.11 only
the performance cores), and inventory overrides that may lower but never claim more than the host has."""

from __future__ import annotations

import dataclasses

import pytest

from tasks.facts import cpu_list, parse_host_profile
from tasks.model import ClusterConfigError, build_cluster
from tests.unit.conftest import inventory_host


def lscpu(*cores: tuple[int, int], offline: tuple[int, ...] = (), siblings_last: bool = True) -> list[str]:
    """`lscpu -p=CPU,SOCKET,CORE` lines (online CPUs only, as lscpu -p lists them) for cores given as
    (socket, threads), numbered as Linux numbers them on a Xeon (first threads of every core, then the
    siblings) or, siblings_last=False, on a hybrid Core CPU (each core's threads one after the other)."""
    rows = []
    if siblings_last:
        for thread in range(max(threads for _, threads in cores)):
            rows += [(socket, core) for core, (socket, threads) in enumerate(cores) if thread < threads]
    else:
        rows = [(socket, core) for core, (socket, threads) in enumerate(cores) for _ in range(threads)]
    return [f"cpu={cpu},{socket},{core}" for cpu, (socket, core) in enumerate(rows) if cpu not in offline]


def host_profile(cpu_lines: list[str], performance_cpus: str = "", codename: str = "trixie") -> list[str]:
    return ["hostname=n1", f"cpus={len(cpu_lines)}", *cpu_lines, f"performance_cpus={performance_cpus}",
            "memory_kb=24684092", f"codename={codename}", "slurm_version=", "cgroup_fs=cgroup2fs", "python=3.13"]


def node_of(profile: list[str], slurm_node: dict | None = None) -> tuple[dict, list[str]]:
    """The compute node's slurm.conf values and the cluster's warnings."""
    facts = parse_host_profile(profile)
    head = inventory_host("head", "slurm_controller", codename=facts.codename)
    compute = inventory_host("c1", "slurm_compute", data={"slurm_node": slurm_node or {}})
    compute = dataclasses.replace(compute, facts=dataclasses.replace(facts, hostname="c1"))
    cluster = build_cluster([head, compute], {"deploy_galaxy": False})
    (node,) = cluster.nodes
    layout = {key: getattr(node, key) for key in ("cpus", "sockets", "cores_per_socket", "threads_per_core")}
    return layout, list(cluster.warnings)


def layout(cpus, sockets, cores_per_socket, threads_per_core) -> dict:
    return {"cpus": cpus, "sockets": sockets, "cores_per_socket": cores_per_socket, "threads_per_core": threads_per_core}


def test_smt_on_two_sockets():
    node, warnings = node_of(host_profile(lscpu(*[(0, 2)] * 8, *[(1, 2)] * 8)))
    assert node == layout(32, 2, 8, 2) and not [w for w in warnings if "CPU" in w]


def test_single_socket_without_smt():
    assert node_of(host_profile(lscpu(*[(0, 1)] * 4)))[0] == layout(4, 1, 4, 1)


def test_cpus_taken_offline_leave_the_layout_slurm_can_use():
    """32 CPUs (16 cores x 2 threads), 4 sibling threads offline: 28 online; slurmd counts
    28 / 16 = 1 thread per core, and Slurm schedules 16 (slurmctld would reset CPUs=28 to 16)."""
    cpus = lscpu(*[(0, 2)] * 16, offline=(16, 17, 18, 19))
    assert len(cpus) == 28
    node, warnings = node_of(host_profile(cpus))
    assert node == layout(16, 1, 16, 1)
    assert ("host c1: 28 CPUs online in 1 socket(s) x 16 cores, which is no product of sockets, cores and threads "
            "per core (CPUs offline, or cores with unlike thread counts); Slurm schedules 16 of them "
            "(CPUs=16, ThreadsPerCore=1)") in warnings


@pytest.mark.parametrize("codename, expected, note", [
    # 22.05 counts every CPU: 24 CPUs on 16 cores, 1 thread per core; Slurm uses 16.
    ("bookworm", layout(16, 1, 16, 1), "Slurm schedules 16 of them"),
    # 24.11 leaves the efficiency cores out (xcpuinfo.c _remove_ecores): 8 performance cores x 2 threads.
    ("trixie", layout(16, 1, 8, 2), "a hybrid CPU; Slurm uses its performance cores only: 16 of its 24 CPUs"),
])
def test_intel_hybrid_cpu_as_each_slurm_release_describes_it(codename, expected, note):
    """An i9-12900-like CPU: 8 performance cores with 2 threads (CPUs 0-15), 8 efficiency cores with 1."""
    cpus = lscpu(*[(0, 2)] * 8, *[(0, 1)] * 8, siblings_last=False)
    assert len(cpus) == 24
    facts = parse_host_profile(host_profile(cpus, "0-15", codename))
    assert facts.performance_cores == (16, 1, 8, 2)
    node, warnings = node_of(host_profile(cpus, "0-15", codename))
    assert node == expected
    assert any(note in warning for warning in warnings), warnings


def test_overrides_lower_but_never_claim_more_than_the_host_has():
    smt = host_profile(lscpu(*[(0, 2)] * 4))  # 1 socket x 4 cores x 2 threads
    assert node_of(smt, {"cpus": 4})[0] == layout(4, 1, 4, 1)  # one CPU per core
    assert node_of(smt, {"threads_per_core": 1})[0] == layout(4, 1, 4, 1)  # CPUs follow the layout given
    assert node_of(smt, {"cores_per_socket": 2})[0] == layout(4, 1, 2, 2)
    with pytest.raises(ClusterConfigError) as refused:
        node_of(smt, {"cpus": 6})
    assert refused.value.problems == [
        "host c1: slurm_node.cpus 6 is more than the host's 4 cores and fewer than its 8 CPUs; Slurm counts a node's "
        "cores against what slurmd finds and would drain it. Give cpus at most 4 or 8, or sockets, cores_per_socket "
        "and threads_per_core as well"]
    with pytest.raises(ClusterConfigError) as refused:
        node_of(smt, {"cpus": 8, "threads_per_core": 1})
    assert refused.value.problems == ["host c1: slurm_node gives cpus=8 but sockets x cores_per_socket x "
                                      "threads_per_core = 4; make them agree"]
    with pytest.raises(ClusterConfigError) as refused:
        node_of(smt, {"sockets": 2})
    assert "slurm_node.sockets: 2 is more than the host has (1 detected)" in refused.value.problems[0]


def test_kernel_cpu_lists():
    assert cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu_list("") == set() and cpu_list("garbage") == set()
