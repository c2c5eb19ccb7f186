"""Slurm: packages and daemons by role, one slurm.conf everywhere, ports, names, node health."""

from __future__ import annotations

import pytest

from checks.cluster import listening_tcp_ports, odd_ones_out
from tasks.model.slurm import parse_slurmd_gres, parse_slurmd_hardware
from tasks.packages import packages_for
from tasks.slurm_status import parse_sinfo_nodes

# Slurm's defaults (slurm.conf(5)); slurm_config_extra may set others.
DEFAULT_PORTS = {"SlurmctldPort": 6817, "SlurmdPort": 6818}
DAEMONS = {"controller": ("slurmctld", "SlurmctldPort"), "compute": ("slurmd", "SlurmdPort")}


def _port(cluster, setting: str) -> int:
    value = str(cluster.config_extra.get(setting, DEFAULT_PORTS[setting]))
    return int(value.split("-")[0])  # a range: the first port is always used


def _daemons(checked_host):
    daemons = [DAEMONS[role] for role in ("controller", "compute") if role in checked_host.roles]
    if not daemons:
        pytest.skip("no Slurm daemon here (a Galaxy host only)")
    return daemons


def test_slurm_packages(cluster_host, cluster):
    """the Slurm packages of the host's roles are installed"""
    roles = cluster_host.roles if cluster.galaxy else cluster_host.roles - {"galaxy"}
    missing = [p for p in packages_for(roles) if not cluster_host.host.package(p).is_installed]
    assert not missing, f"packages not installed: {', '.join(missing)}"


def test_slurm_daemons_running(cluster_host):
    """slurmctld / slurmd of the host's roles running and enabled"""
    host = cluster_host.host
    for daemon, _ in _daemons(cluster_host):
        service = host.service(daemon)
        assert service.is_running, f"{daemon} is not running (systemctl status {daemon})"
        assert service.is_enabled, f"{daemon}.service is not enabled"
    if "compute" in cluster_host.roles:
        # A restart of slurmd stops slurmd alone, never the jobs it started.
        kill_mode = host.check_output("systemctl show --property=KillMode slurmd")
        assert kill_mode == "KillMode=process", f"slurmd has {kill_mode}: a restart would kill its jobs"


def test_slurm_ports_listening(cluster_host, cluster):
    """the Slurm daemons' ports are listening"""
    listening = listening_tcp_ports(cluster_host.host)
    for daemon, setting in _daemons(cluster_host):
        port = _port(cluster, setting)
        assert port in listening, f"{daemon} does not listen on TCP port {port} ({setting})"


@pytest.fixture(scope="session")
def slurm_conf_digests(checked_cluster, cluster) -> dict[str, str]:
    digests = {}
    for checked in checked_cluster.hosts:
        path = f"{cluster.host(checked.name).platform.config_dir}/slurm.conf"
        try:
            digests[checked.name] = checked.host.check_output(f"sha256sum {path} 2>/dev/null || echo missing").split(" ")[0]
        except Exception:  # unreachable: its own checks say so
            continue
    return digests


def test_slurm_conf_root_owned(cluster_host, cluster):
    """slurm.conf owned by root, mode 0644"""
    path = f"{cluster.host(cluster_host.name).platform.config_dir}/slurm.conf"
    conf = cluster_host.host.file(path)
    assert conf.exists, f"{path} is missing"
    assert (conf.user, conf.group, oct(conf.mode)) == ("root", "root", "0o644"), \
        f"{path} is {conf.user}:{conf.group} {oct(conf.mode)}, not root:root 0o644"


def test_slurm_conf_identical(cluster_host, slurm_conf_digests, controller):
    """slurm.conf identical to the other hosts'"""
    reference, odd = odd_ones_out(slurm_conf_digests, controller.name)
    others = sorted(name for name, digest in slurm_conf_digests.items() if digest == reference and name != cluster_host.name)
    assert cluster_host.name not in odd, \
        f"slurm.conf (sha256 {slurm_conf_digests[cluster_host.name][:12]}) differs from the one on {', '.join(others)} " \
        f"(sha256 {reference[:12]})"


def test_resolves_every_other_host(cluster_host, cluster):
    """every cluster host's name resolves here (to its cluster_address)"""
    problems = []
    for other in cluster.hosts:
        addresses = cluster_host.host.addr(other.node_name).ip_addresses if other.node_name else []
        if not addresses:
            problems.append(f"{other.node_name} does not resolve")
        elif other.address and other.address not in addresses:
            problems.append(f"{other.node_name} resolves to {', '.join(addresses)}, not {other.address}")
    assert not problems, "; ".join(problems)


@pytest.fixture(scope="session")
def sinfo_nodes(controller):
    return parse_sinfo_nodes(controller.host.check_output("sinfo --noheader --Node --format='%N %t %C'"))


def test_node_healthy(compute_host, cluster, sinfo_nodes, controller):
    """the node is healthy in sinfo (idle or busy)"""
    name = cluster.host(compute_host.name).node_name
    node = sinfo_nodes.get(name)
    assert node is not None, f"sinfo on {controller.name} does not list node {name}"
    if node.health != "healthy":
        reason = controller.host.run(f"sinfo --noheader --Node --nodes={name} --format='%E'").stdout.strip()
        pytest.fail(f"node {node.describe()} is {node.health}" + (f": {reason}" if reason and reason != "none" else ""),
                    pytrace=False)


def test_node_has_what_slurm_conf_gives_it(compute_host, cluster):
    """slurmd finds at least the CPUs, cores, threads, memory and GRES slurm.conf gives the node (slurmd -C,
    slurmd -G); a node offered more than it has is drained by slurmctld when it registers"""
    name = cluster.host(compute_host.name).node_name
    node = next((n for n in cluster.nodes if n.name == name), None)
    assert node is not None, f"node {name} is not in the deploy's slurm.conf"
    found = parse_slurmd_hardware(compute_host.host.check_output("slurmd -C"))
    assert found, f"slurmd -C on {compute_host.name} printed no NodeName line"
    problems = [f"{key} {getattr(node, key)} in slurm.conf, slurmd finds {found[key]}"
                for key in ("cpus", "threads_per_core", "real_memory") if getattr(node, key) > found[key]]
    cores, found_cores = node.sockets * node.cores_per_socket, found["sockets"] * found["cores_per_socket"]
    if cores > found_cores:  # slurmctld compares sockets x cores ("Low socket*core count")
        problems.append(f"{cores} cores (sockets x cores_per_socket) in slurm.conf, slurmd finds {found_cores}")
    if node.gres:
        offered = {(g.name, g.type): g.count for g in parse_slurmd_gres(compute_host.host.run("slurmd -G 2>&1").stdout)}
        problems += [f"Gres {g.spec} in slurm.conf, slurmd finds {offered.get((g.name, g.type), 0)}"
                     for g in node.gres if offered.get((g.name, g.type), 0) < g.count]
    assert not problems, f"{compute_host.name}: " + "; ".join(problems)
