"""The rendered slurm.conf and cgroup.conf."""

from __future__ import annotations

import pytest

from tasks.model import build_cluster
from tasks.packages import packages_for
from tasks.platform import PATHS
from tasks.slurm import render_cgroup_conf, render_slurm_conf
from tests.unit.conftest import CLI_RUNNER, inventory_host, small_cluster


def settings_of(text: str) -> dict[str, list[str]]:
    """slurm.conf as key -> every value it is given (comments and blanks dropped)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_one_node():
    hosts = [inventory_host("head", "slurm_controller", "slurm_compute", cpus=2, memory_mb=2000)]
    text = render_slurm_conf(build_cluster(hosts, {"slurm_cluster_name": "lab", "deploy_galaxy": False}))
    conf = settings_of(text)
    assert conf["ClusterName"] == ["lab"] and conf["SlurmctldHost"] == ["head"]
    assert conf["SelectType"] == ["select/cons_tres"] and conf["SelectTypeParameters"] == ["CR_CPU_Memory"]
    # 512 MB kept back (5 % of 2000 is less); a job asking for no memory gets the node's memory per CPU
    assert conf["DefMemPerCPU"] == ["744"]
    assert conf["SlurmUser"] == ["slurm"] and conf["AuthType"] == ["auth/munge"]
    assert "NodeName=head CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1488 State=UNKNOWN" in text
    assert "PartitionName=debug Nodes=head Default=YES MaxTime=INFINITE State=UP" in text
    # every key once (NodeName/PartitionName lines aside)
    assert all(len(v) == 1 for k, v in conf.items() if k not in ("NodeName", "PartitionName"))
    assert conf["SlurmdSpoolDir"] != conf["StateSaveLocation"]
    assert text.endswith("\n") and "\n\n\n" not in text


def test_eight_heterogeneous_nodes_and_partitions():
    hosts = [inventory_host("head", "slurm_controller", "galaxy", address="10.0.0.1", data=CLI_RUNNER)]
    shapes = [(2, 1, 1, 4000), (4, 1, 2, 8000), (8, 2, 1, 16000), (16, 2, 2, 64000)]
    for i in range(8):
        cpus, sockets, threads, memory = shapes[i % 4]
        hosts.append(inventory_host(f"n{i}", "slurm_compute", address=f"10.0.0.{20 + i}",
                                    cpus=cpus, sockets=sockets, threads=threads, memory_mb=memory))
    hosts[8] = inventory_host("n7", "slurm_compute", address="10.0.0.27", cpus=16, sockets=2, threads=2, memory_mb=64000,
                              data={"slurm_node": {"real_memory": 60000}})
    partitions = [
        {"name": "small", "nodes": ["n0", "n1", "n4", "n5"], "default": True, "max_time": "1:00:00"},
        {"name": "big", "nodes": ["n3", "n7"], "extra": {"OverSubscribe": "NO"}},
    ]
    text = render_slurm_conf(build_cluster(hosts, {"slurm_partitions": partitions, "slurm_config_extra": {"MaxJobCount": 5000}}))
    conf = settings_of(text)
    assert len(conf["NodeName"]) == 8
    # 5 % kept back, at least 512 MB; n7's RealMemory is given
    assert "n0 CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=3488 State=UNKNOWN" in conf["NodeName"]
    assert "n3 CPUs=16 Sockets=2 CoresPerSocket=4 ThreadsPerCore=2 RealMemory=60800 State=UNKNOWN" in conf["NodeName"]
    assert "n7 CPUs=16 Sockets=2 CoresPerSocket=4 ThreadsPerCore=2 RealMemory=60000 State=UNKNOWN" in conf["NodeName"]
    assert conf["PartitionName"] == [
        "small Nodes=n0,n1,n4,n5 Default=YES MaxTime=1:00:00 State=UP",
        "big Nodes=n3,n7 Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO",
    ]
    assert conf["MaxJobCount"] == ["5000"]
    assert conf["DefMemPerCPU"] == ["1744"]  # n0's 3488 MB / 2 CPUs: the smallest share
    assert "head" not in " ".join(conf["NodeName"])  # the controller is not a compute node here


def test_rendering_is_deterministic(hosts):
    assert render_slurm_conf(build_cluster(hosts, {})) == render_slurm_conf(build_cluster(list(hosts), {}))


def test_cgroup_conf_only_with_cgroup_plugins():
    assert render_cgroup_conf(build_cluster(small_cluster(1), {})) is None
    text = render_cgroup_conf(build_cluster(small_cluster(1, cgroup="v2"), {}))
    assert "CgroupPlugin=cgroup/v2\n" in text and "ConstrainCores=yes\n" in text


def test_packages_by_role():
    assert packages_for(frozenset({"controller", "galaxy"})) == ["slurm-client", "slurmctld"]
    assert packages_for(frozenset({"compute"})) == ["slurm-client", "slurmd"]


def test_paths_keep_spool_and_state_apart():
    assert PATHS.slurmd_spool != PATHS.state_save


def test_debian_13_slurm_24_11():
    hosts = small_cluster(2, codename="trixie", python="3.13")
    cluster = build_cluster(hosts, {"slurm_select_type": "select/cons_res"})
    conf = settings_of(render_slurm_conf(cluster))
    assert cluster.platform.slurm == "24.11" and cluster.platform.config_dir == "/etc/slurm"
    assert conf["SlurmUser"] == ["slurm"]  # slurmctld runs as slurm on Debian 13 and aborts without it
    assert conf["SelectType"] == ["select/cons_tres"]  # cons_res is gone in 24.11
    assert "SlurmctldPidFile" not in conf and "SlurmdPidFile" not in conf  # the units' defaults fit


def test_same_text_for_both_releases_apart_from_the_header():
    bookworm = render_slurm_conf(build_cluster(small_cluster(2), {})).splitlines()
    trixie = render_slurm_conf(build_cluster(small_cluster(2, codename="trixie", python="3.13"), {})).splitlines()
    assert [a for a, b in zip(bookworm, trixie) if a != b] == ["# slurm.conf for cluster galaxy, Slurm 22.05."]


def test_cgroup_plugin_choice_does_not_depend_on_release():
    cluster = build_cluster(small_cluster(1, codename="trixie", python="3.13", cgroup="v2"), {})
    assert cluster.proctrack_type == "proctrack/cgroup"
    assert "CgroupPlugin=cgroup/v2" in render_cgroup_conf(cluster)


# How a changed configuration is applied (tasks/platform.py Platform.how_to_apply).

from tasks.platform import CGROUP_CONF, NODE_ATTRIBUTES, NODES_ADDED_OR_REMOVED, PARTITIONS, platform_for  # noqa: E402
from tasks.slurm_rollout import changed_settings  # noqa: E402

TRIXIE = platform_for("trixie", "24.11.5-4+deb13u1")
BOOKWORM = platform_for("bookworm", "22.05.8-4+deb12u3")


def _conf(**changes) -> str:
    hosts = small_cluster(2)
    return render_slurm_conf(build_cluster(hosts, changes))


def test_changed_settings_sees_keys_nodes_partitions_and_cgroup():
    base = _conf()
    assert changed_settings(base, base) == frozenset()
    two = [{"name": "debug", "nodes": "ALL", "default": True}, {"name": "short", "nodes": "ALL", "max_time": "1:00:00"}]
    assert changed_settings(base, _conf(slurm_partitions=two)) == {PARTITIONS}
    assert changed_settings(base, _conf(slurm_config_extra={"SlurmdPort": 6820}), [CGROUP_CONF]) == {"SlurmdPort", CGROUP_CONF}
    fewer = "\n".join(line for line in base.splitlines() if not line.startswith("NodeName=c2"))
    assert NODES_ADDED_OR_REMOVED in changed_settings(base, fewer)
    bigger = base.replace("RealMemory=", "RealMemory=1", 1)
    assert changed_settings(base, bigger) == {NODE_ATTRIBUTES}
    # Slurm reads keys case-insensitively; comments do not count
    assert changed_settings(base, base.replace("MailProg=", "mailprog=") + "# a comment\n") == frozenset()


def test_how_to_apply_per_release():
    assert TRIXIE.reconfigure_reexecs and not BOOKWORM.reconfigure_reexecs
    # 23.11+: partitions, scheduling, new nodes, plugins and cgroup.conf are taken by reconfigure
    for change in (PARTITIONS, "MaxJobCount", "PriorityType", NODES_ADDED_OR_REMOVED, NODE_ATTRIBUTES, "ProctrackType",
                   "TaskPlugin", "SelectType", CGROUP_CONF):
        assert TRIXIE.how_to_apply(frozenset({change}))[0] == "reconfigure", change
        # 22.05 would accept a file it cannot apply without a word: restarts, checked
        assert BOOKWORM.how_to_apply(frozenset({change}))[0] == "restart", change
    # listening ports and authentication: restarts on both
    assert TRIXIE.how_to_apply(frozenset({PARTITIONS, "SlurmdPort"})) == ("restart", ["SlurmdPort"])
    assert TRIXIE.how_to_apply(frozenset({"AuthType"}))[0] == "restart"


def test_turning_accounting_on_restarts_slurmctld_with_slurmdbds_cluster_id():
    """24.11 measured: a reconfigure onto a slurmdbd that gave the cluster another id stops on
    CLUSTER ID MISMATCH; a restart without the old clustername file takes slurmdbd's id."""
    from tasks.slurm_rollout import CLUSTER_ID_FILE, controller_apply

    assert TRIXIE.how_to_apply(frozenset({"AccountingStorageType", "JobAcctGatherType"})) == (
        "restart", ["AccountingStorageType"])
    joining = controller_apply("restart", ["/etc/slurm/slurm.conf"], joins_accounting=True)
    assert f"mv -f {CLUSTER_ID_FILE} {CLUSTER_ID_FILE}." in joining and joining.index("mv -f") < joining.index("systemctl restart")
    assert "clustername" not in controller_apply("restart", ["/etc/slurm/slurm.conf"])
    assert CLUSTER_ID_FILE == f"{PATHS.state_save}/clustername"


def test_node_health_check_with_galaxy_only():
    from tasks.slurm import render_health_check_conf
    cluster = build_cluster(small_cluster(1, galaxy=CLI_RUNNER), {})
    conf = settings_of(render_slurm_conf(cluster))
    assert conf["HealthCheckProgram"] == ["/usr/local/sbin/pgs-node-health"]
    assert conf["HealthCheckInterval"] == ["300"] and conf["HealthCheckNodeState"] == ["ANY"]
    health = render_health_check_conf(cluster)
    assert "MARKER=/srv/galaxy/.pgs-shared\n" in health and "REASON_PREFIX=pgs-health:\n" in health and "VENV=/srv/galaxy/venv\n" in health
    assert "MARKER_TEXT='pyinfra-galaxy-slurm: Galaxy'\"'\"'s shared directory of cluster galaxy'" in health
    assert "HealthCheckProgram" not in render_slurm_conf(build_cluster(small_cluster(1), {"deploy_galaxy": False}))
    assert "HealthCheckProgram" not in render_slurm_conf(build_cluster(small_cluster(1), {"slurm_health_check_interval": 0}))


def test_health_check_keys_are_the_deploys_while_its_check_is_on():
    from tasks.model import ClusterConfigError

    own = {"slurm_config_extra": {"HealthCheckProgram": "/usr/sbin/nhc"}}
    with pytest.raises(ClusterConfigError) as refused:
        build_cluster(small_cluster(1, galaxy=CLI_RUNNER), own)
    assert refused.value.problems == [
        "slurm_config_extra: HealthCheckProgram is written by the deploy while its node health check is on; to run your "
        "own (e.g. NHC), set slurm_health_check_interval = 0 and give HealthCheck* here"]
    nhc = build_cluster(small_cluster(1, galaxy=CLI_RUNNER), {**own, "slurm_health_check_interval": 0})
    assert settings_of(render_slurm_conf(nhc))["HealthCheckProgram"] == ["/usr/sbin/nhc"]
