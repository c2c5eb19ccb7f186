"""GPU nodes described (slurm_node.gres): slurm.conf Gres= and GresTypes, gres.conf, cgroup devices,
destinations asking for a GRES no node offers refused; slurmd -C / slurmd -G read back."""

from __future__ import annotations

import pytest

from tasks.model import build_cluster, parse_node_lines
from tasks.model.problems import ClusterConfigError
from tasks.model.slurm import Gres, device_file_count, parse_slurmd_gres, parse_slurmd_hardware
from tasks.slurm import render_cgroup_conf, render_gres_conf, render_slurm_conf
from tests.unit.conftest import CLI_RUNNER, inventory_host, small_cluster
from tests.unit.test_slurm_conf import settings_of

A100 = {"name": "gpu", "type": "a100", "count": 2, "file": "/dev/nvidia[0-1]"}
# Measured on Debian 13's slurmd 24.11 (a gres.conf naming two device files of one type).
SLURMD_G = """slurmd: _read_slurm_cgroup_conf: No cgroup.conf file (/etc/slurm/cgroup.conf), using defaults
slurmd: Gres Name=gpu Type=tesla Count=1 Index=0 ID=7696487 File=/dev/nvidia0 Links=(null) Flags=HAS_FILE,HAS_TYPE,ENV_NVML
slurmd: Gres Name=gpu Type=tesla Count=1 Index=0 ID=7696487 File=/dev/nvidia1 Links=(null) Flags=HAS_FILE,HAS_TYPE,ENV_NVML
"""
SLURMD_C = """NodeName=pgsmem-c1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
UpTime=0-00:25:17
"""


def gpu_cluster(gres=(A100,), cgroup="v2", galaxy=None):
    hosts = small_cluster(1, galaxy=galaxy, cgroup=cgroup)
    hosts.append(inventory_host("g1", "slurm_compute", address="10.0.0.20", cgroup=cgroup,
                                data={"slurm_node": {"gres": list(gres) if isinstance(gres, tuple) else gres}}))
    return hosts


def problems_of(hosts, settings=None) -> str:
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(hosts, settings or {})
    return str(error.value)


def test_gpu_node_in_slurm_conf_gres_conf_and_cgroup():
    cluster = build_cluster(gpu_cluster(), {})
    conf = settings_of(render_slurm_conf(cluster))
    assert conf["GresTypes"] == ["gpu"]
    assert any(line.startswith("g1 ") and " Gres=gpu:a100:2 State=UNKNOWN" in line for line in conf["NodeName"])
    assert not any("Gres=" in line for line in conf["NodeName"] if line.startswith("c1 "))
    assert "\nNodeName=g1 Name=gpu Type=a100 File=/dev/nvidia[0-1]\n" in render_gres_conf(cluster)
    assert settings_of(render_cgroup_conf(cluster))["ConstrainDevices"] == ["yes"]


def test_no_gres_no_gres_conf():
    cluster = build_cluster(small_cluster(2), {})
    assert render_gres_conf(cluster) is None and "GresTypes" not in render_slurm_conf(cluster)


def test_count_only_gres_and_unreachable_node_keeps_its_gres():
    cluster = build_cluster(gpu_cluster(gres=[{"name": "gpu", "count": 1}], cgroup="v1-ro"), {})
    assert "NodeName=g1 Name=gpu Count=1" in render_gres_conf(cluster)
    line = next(line for line in render_slurm_conf(cluster).splitlines() if line.startswith("NodeName=g1"))
    assert parse_node_lines([line])["g1"].gres == (Gres("gpu", 1),)
    assert parse_node_lines(["NodeName=x CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=9 "
                             "Gres=gpu:a100:2,gpu:1 State=UNKNOWN"])["x"].gres == (Gres("gpu", 2, "a100"), Gres("gpu", 1))


@pytest.mark.parametrize(("file", "count"), [("/dev/nvidia0", 1), ("/dev/nvidia[0-3]", 4), ("/dev/nvidia[0,2-3]", 3)])
def test_device_file_count(file, count):
    assert device_file_count(file) == count


@pytest.mark.parametrize(("gres", "expected"), [
    ([{**A100, "count": 3}], "slurm_node.gres[0]: file /dev/nvidia[0-1] names 2 device(s) but count is 3"),
    ([{**A100, "file": "nvidia0", "count": 1}], "slurm_node.gres[0].file: 'nvidia0' is not a device under /dev/"),
    ([{"name": "gpu"}], "slurm_node.gres[0]: must be a mapping with at least 'name' and 'count'"),
    ([{**A100, "model": "x"}], "slurm_node.gres[0]: unknown model; use name, type, count, file"),
    ([{**A100, "count": 0}], "slurm_node.gres[0].count: 0 is not a positive whole number"),
    ({"gpu": 2}, "host g1: slurm_node.gres: must be a list like"),
    ([A100, A100], "name:type 'gpu:a100' appears more than once"),
])
def test_gres_description_refused_with_the_fix(gres, expected):
    assert expected in problems_of(gpu_cluster(gres=gres))


@pytest.mark.parametrize(("spec", "refused"), [
    ("--ntasks=1 --gres=gpu:1", None),
    ("--ntasks=1 --gres=gpu:a100:2", None),
    ("--gpus-per-node=2", None),
    ("--gres=gpu:a100:4", "asks for gpu:a100:4 per node, which no node offers (g1 gpu:a100:2)"),
    ("--gres=gpu:h100:1", "asks for gpu:h100:1 per node, which no node offers (g1 gpu:a100:2)"),
    ("--gres=shard:1", "asks for shard:1 per node"),
    ("--gpus=3", "asks for gpu:3 in all"),
])
def test_destination_asking_for_gres_no_node_offers_is_refused(spec, refused):
    destinations = [{"id": "slurm", "runner": "slurm"}, {"id": "gpu", "runner": "slurm", "native_specification": spec}]
    hosts = gpu_cluster(galaxy={**CLI_RUNNER, "galaxy_destinations": destinations})
    if refused is None:
        build_cluster(hosts, {})
    else:
        assert f"galaxy_destinations[1].native_specification (gpu): {refused}" in problems_of(hosts)


def test_gres_asked_on_a_cluster_without_any():
    destinations = [{"id": "slurm", "runner": "slurm", "native_specification": "--gres=gpu:1"}]
    hosts = small_cluster(1, galaxy={**CLI_RUNNER, "galaxy_destinations": destinations})
    assert "which no node offers (no node has any GRES)" in problems_of(hosts)


def test_slurmd_hardware_and_gres_read_back():
    assert parse_slurmd_hardware(SLURMD_C) == {"cpus": 2, "sockets": 1, "cores_per_socket": 2, "threads_per_core": 1,
                                               "real_memory": 24105}
    assert parse_slurmd_hardware("slurmd: error: nothing") == {}
    assert parse_slurmd_gres(SLURMD_G) == (Gres("gpu", 2, "tesla"),)
    assert parse_slurmd_gres("slurmd: _read_slurm_cgroup_conf: No cgroup.conf file\n") == ()


def test_only_this_runs_gres_count_drains_are_resumed():
    from tasks.slurm_rollout import drained_during_rollout
    since = 1_796_680_000  # 2026-12-07T21:46:40 UTC
    lines = "\n".join([
        "g1|drained|2026-12-07T22:26:45|gres/gpu count reported lower than configured (0 < 1)",  # this run's
        "g2|drained|2026-12-07T20:00:00|gres/gpu count reported lower than configured (0 < 1)",  # before it
        "g3|drained|2026-12-07T22:27:00|Kill task failed",  # another reason: an admin's business
        "g4|idle|Unknown|none",
        "x9|drained|2026-12-07T22:27:00|gres/gpu count reported lower than configured (0 < 1)",  # not ours
    ])
    assert drained_during_rollout(lines, since, ["g1", "g2", "g3", "g4"]) == ["g1"]
