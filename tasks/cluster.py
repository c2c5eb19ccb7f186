"""The cluster of this pyinfra run: read, checked and built once.

pyinfra runs deploy.py once per host, each in its own greenlet. The first to
ask builds the cluster (reading every host's profile in parallel, read-only);
the others wait on the lock and get the same object, or the same error.
"""

from __future__ import annotations

import gevent
from pyinfra import inventory, logger, state
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.server import Command

from tasks.accounting import accounting_host_problems
from tasks.common import once
from tasks.facts import GalaxyDatabaseNow, HostProfile
from tasks.galaxy.venv import check_galaxy_venv
from tasks.model.settings import GALAXY, read
from tasks.model import (
    CONTROLLER_GROUP, GALAXY_GROUP, Cluster, ClusterConfigError, GalaxyJob, InventoryHost, build_cluster,
    parse_node_lines,
)
from tasks.model.database import GalaxyDatabaseState


@once
def current_cluster() -> Cluster:
    if state.config.DIFF:
        raise PyinfraError("--diff prints old and new contents of every changed file, secrets included; run without it")
    hosts = list(inventory)
    # Hosts pyinfra could not connect to are left out of this run (it reports them
    # and exits non-zero); the others go on.
    reachable = set(inventory.get_active_hosts())
    readers = {host: gevent.spawn(host.get_fact, HostProfile) for host in hosts if host in reachable}
    gevent.joinall(list(readers.values()))
    unreadable = [f"{host.name}: {reader.exception or 'no answer'}" for host, reader in readers.items() if not reader.value]
    if unreadable:
        raise PyinfraError("could not read these hosts, nothing was changed:\n  " + "\n  ".join(unreadable))
    specs = [InventoryHost(h.name, frozenset(h.groups), h.data.dict(), readers[h].value if h in readers else None,
                           frozenset(getattr(h.connector_cls, "data_meta", {})))
             for h in hosts]
    # Cluster-wide settings come from the controller's data (group_data/all.py and its groups).
    controllers = inventory.get_group(CONTROLLER_GROUP, default=[]) or hosts
    try:
        database_now, galaxy_jobs = _galaxy_database(controllers[0].data, reachable)
        cluster = build_cluster(specs, controllers[0].data, _current_nodes(controllers[0], reachable),
                                galaxy_jobs, database_now)
    except ClusterConfigError as error:
        raise PyinfraError(str(error)) from None
    if cluster.galaxy and cluster.galaxy.host.reachable:
        problems = check_galaxy_venv(cluster.galaxy, inventory.get_host(cluster.galaxy.host.inventory_name))
        if problems:
            raise PyinfraError(str(ClusterConfigError(problems)))
    if cluster.accounting:
        problems = accounting_host_problems(cluster)
        if problems:
            raise PyinfraError(str(ClusterConfigError(problems)))
    for warning in cluster.warnings:
        logger.warning(warning)
    logger.info(cluster.memory.summary())
    database = cluster.galaxy.database if cluster.galaxy else None
    if database and database.kind == "postgresql":
        logger.info(database.connections.summary(database.local_postgresql))
    return cluster


def _current_nodes(controller, reachable) -> dict:
    """The nodes in the controller's live slurm.conf (kept for hosts not reached this run)."""
    if controller not in reachable:
        return {}
    lines = controller.get_fact(Command, "cat /etc/slurm/slurm.conf /etc/slurm-llnl/slurm.conf 2>/dev/null | grep '^NodeName=' || true")
    return parse_node_lines((lines or "").splitlines())


def _galaxy_database(settings, reachable) -> tuple[GalaxyDatabaseState, list[GalaxyJob]]:
    """What Galaxy's database in use holds and the jobs its handlers follow now (read-only),
    for the model's runner-switch, handler-removal and database-switch rules."""
    galaxy_hosts = inventory.get_group(GALAXY_GROUP, default=[])
    if not settings.get("deploy_galaxy", True) or len(galaxy_hosts) != 1 or galaxy_hosts[0] not in reachable:
        return GalaxyDatabaseState(), []
    config = read(galaxy_hosts[0].data, GALAXY)
    return galaxy_hosts[0].get_fact(GalaxyDatabaseNow, root=config["galaxy_root"], user=config["galaxy_user"])
