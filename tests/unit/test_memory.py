"""Memory scheduled and enforced: RealMemory kept back, DefMemPerCPU, the enforcement per host kind."""

from __future__ import annotations

import pytest

from tasks.model import build_cluster
from tasks.model.memory import default_reserve_mb
from tasks.model.problems import ClusterConfigError
from tasks.slurm import render_cgroup_conf, render_slurm_conf
from tests.unit.conftest import CLI_RUNNER, inventory_host, small_cluster
from tests.unit.test_slurm_conf import settings_of


def problems_of(hosts, settings) -> str:
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(hosts, settings)
    return str(error.value)


@pytest.mark.parametrize(("total", "galaxy", "reserved"), [
    (2000, False, 512),  # at least 512 MB
    (24105, False, 1206),  # 5 %, rounded up
    (64000, False, 3200),
    (8192, True, 512 + (8192 - 512) // 2),  # the Galaxy host also keeps half the rest for Galaxy
])
def test_default_reserve(total, galaxy, reserved):
    assert default_reserve_mb(total, galaxy) == reserved


def test_default_jobs_asking_for_no_memory_use_every_cpu():
    """The lab's shape (2 nodes x 2 CPUs, 24105 MB): four one-CPU jobs without --mem fit at once."""
    cluster = build_cluster(small_cluster(2, cpus=2, memory_mb=24105), {})
    memory = cluster.memory
    assert memory.consumable and memory.derived_default
    assert [n.real_memory for n in cluster.nodes] == [22899, 22899]
    assert memory.def_mem_per_cpu == 22899 // 2
    assert all(memory.def_mem_per_cpu * node.cpus <= node.real_memory for node in cluster.nodes)
    conf = settings_of(render_slurm_conf(cluster))
    assert conf["SelectTypeParameters"] == ["CR_CPU_Memory"] and conf["DefMemPerCPU"] == ["11449"]
    assert "DefMemPerNode" not in conf
    line = memory.summary()
    assert "DefMemPerCPU=11449 MB per CPU (the smallest node's RealMemory / CPUs)" in line
    assert "c1 1206 MB of 24105" in line and "OverMemoryKill every 10 s" in line


def test_smallest_share_per_cpu_sets_the_default():
    hosts = small_cluster(1, cpus=2, memory_mb=8000)
    hosts.append(inventory_host("c2", "slurm_compute", address="10.0.0.12", cpus=8, memory_mb=8000))
    cluster = build_cluster(hosts, {})
    # c2: (8000 - 512) / 8 = 936 MB per CPU, less than c1's 3744
    assert cluster.memory.def_mem_per_cpu == 936


def test_galaxy_host_that_runs_jobs_keeps_half_for_galaxy():
    hosts = [inventory_host("one", "slurm_controller", "slurm_compute", "galaxy", data=CLI_RUNNER, cpus=4, memory_mb=16000)]
    (node,) = build_cluster(hosts, {}).nodes
    assert node.real_memory == 16000 - 800 - (16000 - 800) // 2


def test_reserved_setting_and_real_memory_given_per_node():
    hosts = small_cluster(2, cpus=2, memory_mb=8000)
    hosts[2] = inventory_host("c2", "slurm_compute", address="10.0.0.12", cpus=2, memory_mb=8000,
                              data={"slurm_node": {"real_memory": 8000}})
    cluster = build_cluster(hosts, {"slurm_memory_reserved": 1000})
    assert [n.real_memory for n in cluster.nodes] == [7000, 8000]
    assert "c2 RealMemory as given" in cluster.memory.summary()


@pytest.mark.parametrize(("settings", "expected"), [
    ({"slurm_memory_reserved": -1}, "slurm_memory_reserved: -1 is not a whole number of MB"),
    ({"slurm_memory_reserved": 8000}, "host c1: has 8000 MB and keeps 8000 MB back for the system, which leaves nothing"),
    ({"slurm_def_mem_per_cpu": 0}, "slurm_def_mem_per_cpu: 0 is not a positive whole number of MB; with memory consumable "
                                   "a job asking for none would take its whole node"),
    ({"slurm_def_mem_per_cpu": "2G"}, "slurm_def_mem_per_cpu: '2G' is not a positive whole number of MB"),
    ({"slurm_def_mem_per_cpu": 9000}, "slurm_def_mem_per_cpu: 9000 MB is more than any node offers jobs (the largest "
                                      "RealMemory is 7488 MB)"),
    ({"slurm_def_mem_per_cpu": 1024, "slurm_select_type_parameters": "CR_CPU"},
     "slurm_def_mem_per_cpu: has no effect with SelectTypeParameters=CR_CPU"),
    ({"slurm_config_extra": {"DefMemPerNode": 4096}}, "slurm_config_extra: DefMemPerNode is written by the deploy; "
                                                       "set slurm_def_mem_per_cpu instead"),
    ({"slurm_config_extra": {"JobAcctGatherParams": "NoShared"}}, "slurm_config_extra: JobAcctGatherParams is written"),
])
def test_memory_settings_refused_with_the_fix(settings, expected):
    assert expected in problems_of(small_cluster(2, cpus=2, memory_mb=8000), settings)


def test_default_that_leaves_cpus_idle_is_said():
    cluster = build_cluster(small_cluster(2, cpus=2, memory_mb=8000), {"slurm_def_mem_per_cpu": 5000})
    assert cluster.memory.def_mem_per_cpu == 5000
    assert any("jobs asking for no memory can use only c1 (1 of 2 CPUs)" in w for w in cluster.warnings)


def test_cpu_only_scheduling_writes_no_default():
    cluster = build_cluster(small_cluster(2), {"slurm_select_type_parameters": "CR_Core"})
    conf = settings_of(render_slurm_conf(cluster))
    assert "DefMemPerCPU" not in conf and not cluster.memory.consumable
    assert "not consumable" in cluster.memory.summary()


def test_cgroup_hosts_constrain_memory_in_the_kernel():
    cluster = build_cluster(small_cluster(2, cgroup="v2"), {})
    cgroup = settings_of(render_cgroup_conf(cluster))
    assert cgroup["ConstrainRAMSpace"] == ["yes"] and cgroup["ConstrainSwapSpace"] == ["yes"]
    conf = settings_of(render_slurm_conf(cluster))
    assert "JobAcctGatherParams" not in conf and conf["JobAcctGatherType"] == ["jobacct_gather/cgroup"]
    assert "ConstrainRAMSpace" in cluster.memory.summary()


def test_read_only_cgroups_kill_over_memory_steps_from_sampling():
    cluster = build_cluster(small_cluster(2), {})
    conf = settings_of(render_slurm_conf(cluster))
    assert conf["JobAcctGatherParams"] == ["OverMemoryKill"] and conf["JobAcctGatherFrequency"] == ["task=10"]
    assert conf["JobAcctGatherType"] == ["jobacct_gather/linux"] and render_cgroup_conf(cluster) is None


def test_task_plugin_without_cgroup_falls_back_to_over_memory_kill():
    cluster = build_cluster(small_cluster(2, cgroup="v2"), {"slurm_task_plugin": "task/affinity"})
    assert "ConstrainRAMSpace" not in cluster.cgroup_conf  # proctrack/cgroup still has its cgroup.conf
    assert settings_of(render_slurm_conf(cluster))["JobAcctGatherParams"] == ["OverMemoryKill"]
