"""The cluster model: what a valid inventory becomes, and every bad input refused with a fix."""

from __future__ import annotations

import dataclasses

import pytest

from tasks.model import ClusterConfigError, build_cluster, parse_node_lines
from tests.unit.conftest import inventory_host, small_cluster


def problems_of(hosts, **settings) -> list[str]:
    with pytest.raises(ClusterConfigError) as caught:
        build_cluster(hosts, settings)
    assert "no host was changed" in str(caught.value)
    return caught.value.problems


def test_valid_cluster_has_roles_nodes_and_default_partition(hosts):
    cluster = build_cluster(hosts, {})
    assert cluster.controller.node_name == "head"
    assert [n.name for n in cluster.nodes] == ["c1", "c2"]
    assert [h.inventory_name for h in cluster.galaxy_hosts] == ["head"]
    (partition,) = cluster.partitions
    assert (partition.name, partition.nodes, partition.default) == ("debug", ("c1", "c2"), True)
    assert (cluster.select_type, cluster.select_type_parameters) == ("select/cons_tres", "CR_CPU_Memory")
    assert cluster.platform.slurm == "22.05" and cluster.platform.config_dir == "/etc/slurm"


def test_node_takes_detected_hardware():
    hosts = [inventory_host("head", "slurm_controller", "slurm_compute", cpus=16, sockets=2, threads=2, memory_mb=64000)]
    (node,) = build_cluster(hosts, {"deploy_galaxy": False}).nodes
    # RealMemory: what the host has less 5 % kept back for the system and daemons
    assert (node.cpus, node.sockets, node.cores_per_socket, node.threads_per_core, node.real_memory) == (16, 2, 4, 2, 60800)


def test_node_overrides_within_detected_values():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", data={"slurm_node": {"cpus": 2, "real_memory": 4000}})
    (node,) = build_cluster(hosts, {}).nodes
    assert (node.cpus, node.sockets, node.cores_per_socket, node.threads_per_core, node.real_memory) == (2, 1, 2, 1, 4000)


def test_no_controller():
    hosts = [inventory_host("c1", "slurm_compute")]
    assert any("slurm_controller: needs exactly one host, has 0" in p for p in problems_of(hosts))


def test_two_controllers_are_named():
    hosts = small_cluster() + [inventory_host("head2", "slurm_controller", address="10.0.0.99")]
    (problem,) = problems_of(hosts)
    assert "has 2 (head, head2)" in problem


def test_no_compute_host():
    hosts = [inventory_host("head", "slurm_controller")]
    assert any("slurm_compute: has no host" in p for p in problems_of(hosts))


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        ([{"name": "main", "nodes": ["c1", "c9"]}], "slurm_partitions[0] (main).nodes: c9 not a compute node"),
        ([{"name": "a"}, {"name": "a"}], "slurm_partitions name 'a' appears more than once"),
        ([{"name": "bad name"}], "'bad name' is not a valid name"),
        ([{"name": "a", "default": True}, {"name": "b", "default": True}], "a, b are all marked default"),
        ([], "must be a non-empty list"),
        ([{"nodes": "ALL"}], "must be a mapping with at least a 'name'"),
    ],
)
def test_bad_partitions(hosts, partitions, expected):
    assert any(expected in p for p in problems_of(hosts, slurm_partitions=partitions))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"cpus": 0}, "slurm_node.cpus: 0 is not a positive whole number"),
        ({"cpus": -2}, "slurm_node.cpus: -2 is not a positive whole number"),
        ({"real_memory": "lots"}, "slurm_node.real_memory: 'lots' is not a positive whole number"),
        ({"real_memory": 1.5}, "slurm_node.real_memory: 1.5 is not a positive whole number"),
        ({"cpus": 64}, "slurm_node.cpus: 64 is more than the host has (4 detected)"),
        ({"real_memory": 999999}, "slurm_node.real_memory: 999999 is more than the host has (7900 detected)"),
        ({"gpus": 1}, "slurm_node.gpus: unknown setting"),
        ({"cpus": 4, "sockets": 1, "cores_per_socket": 2}, "make them agree"),
    ],
)
def test_bad_node_overrides(override, expected):
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", data={"slurm_node": override})
    problems = problems_of(hosts)
    assert any(expected in p and "host c1" in p for p in problems), problems


@pytest.mark.parametrize("value", ["CR_GPU", "CR_CPU,CR_Core", "", "CR_CPU,CR_Bogus"])
def test_unknown_select_type_parameters(hosts, value):
    assert any("slurm_select_type_parameters" in p for p in problems_of(hosts, slurm_select_type_parameters=value))


def test_select_type_parameters_with_modifier(hosts):
    cluster = build_cluster(hosts, {"slurm_select_type_parameters": "CR_Core_Memory, CR_LLN"})
    assert cluster.select_type_parameters == "CR_Core_Memory,CR_LLN"


def test_cons_res_becomes_cons_tres_with_a_warning(hosts):
    cluster = build_cluster(hosts, {"slurm_select_type": "select/cons_res"})
    assert cluster.select_type == "select/cons_tres"
    assert any("cons_res was removed" in w for w in cluster.warnings)


def test_unknown_select_type(hosts):
    assert any("slurm_select_type: 'select/magic' is unknown" in p for p in problems_of(hosts, slurm_select_type="select/magic"))


def test_munge_key_file_missing(hosts, tmp_path):
    missing = tmp_path / "nope.key"
    assert any(f"munge_key_file: {missing} does not exist" in p for p in problems_of(hosts, munge_key_file=str(missing)))


@pytest.mark.parametrize("size", [16, 2048])
def test_munge_key_file_wrong_size(hosts, tmp_path, size):
    key = tmp_path / "munge.key"
    key.write_bytes(b"k" * size)
    assert any(f"has {size} bytes; munge needs 32 to 1024" in p for p in problems_of(hosts, munge_key_file=str(key)))


def test_munge_key_file_accepted(hosts, tmp_path):
    key = tmp_path / "munge.key"
    key.write_bytes(b"k" * 128)
    assert build_cluster(hosts, {"munge_key_file": str(key)}).munge_key_file == str(key)


def test_address_must_be_ip_when_managing_etc_hosts():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", address="c1.example.org")
    assert any("host c1: cluster_address 'c1.example.org' is not an IP address" in p for p in problems_of(hosts))
    assert build_cluster(hosts, {"manage_etc_hosts": False}).compute_hosts[0].address is None


def test_duplicate_hostnames():
    hosts = [inventory_host("head", "slurm_controller"), inventory_host("head", "slurm_compute", address="10.0.0.2")]
    assert any("host name (uname -n) 'head' appears more than once" in p for p in problems_of(hosts))


def test_unknown_release_without_slurm():
    hosts = small_cluster(1, codename="hamm")
    assert any("release 'hamm' is not one this deploy knows" in p for p in problems_of(hosts))


def test_compute_newer_than_controller_is_refused():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", codename="trixie")
    (problem,) = problems_of(hosts)
    assert "host c1: Slurm 24.11 (trixie) cannot work with slurmctld 22.05 on head (bookworm)" in problem


def test_compute_too_old_for_controller_is_refused():
    hosts = small_cluster(1, codename="trixie")
    hosts[1] = inventory_host("c1", "slurm_compute", codename="bullseye")
    (problem,) = problems_of(hosts)
    assert "Slurm 20.11 (bullseye) cannot work with slurmctld 24.11" in problem


def test_compatible_mixed_versions_are_allowed():
    hosts = small_cluster(1, codename="trixie")
    hosts[1] = inventory_host("c1", "slurm_compute", codename="bookworm", slurm_version="24.05.4-1")
    assert build_cluster(hosts, {}).compute_hosts[0].platform.slurm == "24.05"


def test_installed_slurm_decides_over_release():
    hosts = small_cluster(1, slurm_version="22.05.8-4+deb12u3")
    assert build_cluster(hosts, {}).platform.slurm_installed


def test_cgroup_v2_everywhere_uses_cgroup_plugins():
    cluster = build_cluster(small_cluster(2, cgroup="v2"), {})
    assert (cluster.proctrack_type, cluster.task_plugin) == ("proctrack/cgroup", "task/cgroup,task/affinity")
    assert cluster.cgroup_conf["CgroupPlugin"] == "cgroup/v2"


def test_read_only_cgroups_anywhere_use_linuxproc():
    hosts = small_cluster(2, cgroup="v2")
    hosts[2] = inventory_host("c2", "slurm_compute", address="10.0.0.12", cgroup="v1-ro")
    cluster = build_cluster(hosts, {})
    assert (cluster.proctrack_type, cluster.task_plugin, cluster.cgroup_conf) == ("proctrack/linuxproc", "task/affinity", None)


def test_inventory_overrides_plugin_choice(hosts):
    cluster = build_cluster(hosts, {"slurm_proctrack_type": "proctrack/cgroup", "slurm_task_plugin": "task/cgroup"})
    assert (cluster.proctrack_type, cluster.task_plugin) == ("proctrack/cgroup", "task/cgroup")
    assert cluster.cgroup_conf == {"CgroupPlugin": "autodetect", "ConstrainRAMSpace": "yes", "ConstrainSwapSpace": "yes"}


def test_all_problems_reported_at_once():
    hosts = [inventory_host("c1", "slurm_compute", data={"slurm_node": {"cpus": 0}})]
    problems = problems_of(hosts, slurm_partitions=[{"name": "x y"}], slurm_select_type_parameters="nope")
    assert [p.split(":")[0] for p in problems] == [
        "group slurm_controller", "host c1", "slurm_partitions[0] (x y).name", "slurm_select_type_parameters", "group galaxy",
    ]


def test_debian_12_node_cannot_join_a_debian_13_controller():
    hosts = small_cluster(2, codename="trixie", python="3.13")
    hosts[2] = inventory_host("c2", "slurm_compute", address="10.0.0.12", codename="bookworm", python="3.13")
    (problem,) = problems_of(hosts, deploy_galaxy=False)
    assert problem.startswith("host c2: Slurm 22.05 (bookworm) cannot work with slurmctld 24.11 on head (trixie)")
    assert "at most 3 releases older" in problem


def unreachable(host):
    """The same inventory host, as a run that could not reach it sees it."""
    return dataclasses.replace(host, facts=None)


def test_unreachable_compute_host_keeps_its_slurm_conf_entry():
    hosts = small_cluster(2)
    known = parse_node_lines(["NodeName=c2 CPUs=8 Sockets=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=30000 State=UNKNOWN"])
    cluster = build_cluster(hosts[:2] + [unreachable(hosts[2])], {}, known)
    assert [n.name for n in cluster.nodes] == ["c1", "c2"] and cluster.nodes[1].cpus == 8
    assert cluster.reachable_nodes == ["c1"] and cluster.unreachable_hosts == ["c2"]
    assert any("host c2 is unreachable: its slurm.conf entry is kept" in w for w in cluster.warnings)


def test_unreachable_new_compute_host_stays_out_until_reached():
    hosts = small_cluster(2)
    cluster = build_cluster(hosts[:2] + [unreachable(hosts[2])], {}, {})
    assert [n.name for n in cluster.nodes] == ["c1"]
    assert any("not in the controller's slurm.conf yet" in w for w in cluster.warnings)


def test_unreachable_controller_is_an_error():
    hosts = small_cluster(1)
    problems = problems_of([unreachable(hosts[0]), hosts[1]])
    assert any("host head (the controller) is unreachable" in p for p in problems)


def test_parse_node_lines_ignores_other_lines():
    nodes = parse_node_lines(["# NodeName=x", "NodeName=n1 CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=100",
                              "PartitionName=debug Nodes=n1", "NodeName=n2 CPUs=2"])
    assert list(nodes) == ["n1"] and nodes["n1"].real_memory == 100
