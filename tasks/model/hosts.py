"""Inventory hosts, what is read from them, and the cluster's hosts with their roles."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.platform import Platform, platform_for

CONTROLLER_GROUP = "slurm_controller"
COMPUTE_GROUP = "slurm_compute"
GALAXY_GROUP = "galaxy"


@dataclass(frozen=True)
class HostFacts:
    """What the deploy reads from a host before changing anything."""

    hostname: str
    cpus: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    memory_mb: int
    codename: str
    slurm_version: str | None  # the installed Debian package version, if any
    cgroup_fs: str  # filesystem type at /sys/fs/cgroup: cgroup2fs on cgroup v2 hosts
    cgroup_writable: bool
    python: str = ""  # python3's "major.minor"
    policy_rc_d: str = ""  # /usr/sbin/policy-rc.d: "" none, "ours" (tasks.packages), "other"
    users: Mapping[str, int] = field(default_factory=dict)  # name -> uid
    groups: Mapping[str, int] = field(default_factory=dict)  # name -> gid
    # An Intel hybrid CPU's performance cores alone (cpus, sockets, cores_per_socket, threads_per_core);
    # None on every other CPU.
    performance_cores: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: frozenset[str]
    data: Mapping[str, Any]
    facts: HostFacts | None  # None: the host could not be reached this run
    connector_keys: frozenset[str] = frozenset()  # its pyinfra connector's own data keys (ssh_user, ...)


@dataclass(frozen=True)
class ClusterHost:
    inventory_name: str
    node_name: str  # the host's short hostname: what Slurm calls it
    address: str | None  # for /etc/hosts; None when DNS is trusted
    roles: frozenset[str]  # controller, compute, galaxy
    platform: Platform
    reachable: bool = True


def cluster_host(host: InventoryHost, config: Mapping[str, Any], problems: list[str],
                  fallback_platform: Platform | None) -> ClusterHost | None:
    roles = {"controller": CONTROLLER_GROUP, "compute": COMPUTE_GROUP, "galaxy": GALAXY_GROUP}
    if host.facts is None:
        if fallback_platform is None:
            return None
        platform = fallback_platform  # unknown this run: assumed like the controller
    else:
        try:
            platform = platform_for(host.facts.codename, host.facts.slurm_version)
        except ValueError as error:
            problems.append(f"host {host.name}: {error}")
            return None
    address = None
    if config["manage_etc_hosts"]:
        address = host.data.get("cluster_address") or host.data.get("ssh_hostname") or host.name
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(
                f"host {host.name}: cluster_address '{address}' is not an IP address; set cluster_address "
                "to the address other cluster hosts reach it on, or set manage_etc_hosts = False when DNS resolves every host"
            )
    return ClusterHost(
        inventory_name=host.name,
        node_name=node_name(host),
        address=address,
        roles=frozenset(role for role, group in roles.items() if group in host.groups),
        platform=platform,
        reachable=host.facts is not None,
    )


def platform_or_none(host: InventoryHost) -> Platform | None:
    try:
        return platform_for(host.facts.codename, host.facts.slurm_version) if host.facts else None
    except ValueError:
        return None


def node_name(host: InventoryHost) -> str:
    """Slurm's name of a host: its short hostname (the inventory's, when it was not reached)."""
    return (host.facts.hostname if host.facts else host.name).split(".")[0]


def check_versions(hosts: list[ClusterHost], problems: list[str]) -> None:
    """slurmd and clients may be at most N releases older than slurmctld, never newer."""
    controller = next((h for h in hosts if "controller" in h.roles), None)
    if controller is None:
        return
    newest = controller.platform
    for host in hosts:
        behind = newest.slurm_index - host.platform.slurm_index
        if behind < 0 or behind > newest.max_versions_behind:
            problems.append(
                f"host {host.inventory_name}: Slurm {host.platform.slurm} ({host.platform.codename}) cannot work with "
                f"slurmctld {newest.slurm} on {controller.inventory_name} ({newest.codename}): a node may be at most "
                f"{newest.max_versions_behind} releases older than the controller and never newer; "
                "upgrade the older hosts or keep them in a separate cluster"
            )
