"""The cluster the checks look at: its hosts as pyinfra's inventory gives them, its
settings as the deploy's model builds them.

`load_inventory` is pyinfra's own loading (`pyinfra INVENTORY ...`): the inventory
file, then group_data/ from the current directory and from beside the inventory
file, then overrides (`--ssh-user` and the like) on top. Each host is reached with
the SSH hostname, user, port, key, ssh_config file and sudo settings of its data,
as pyinfra would reach it, through testinfra's paramiko backend. Nothing here
changes a host: every command only reads.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import testinfra
import testinfra.host
from pyinfra.api import Inventory, State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files

from tasks.facts import HostProfile, parse_host_profile
from tasks.model import (
    COMPUTE_GROUP, CONTROLLER_GROUP, GALAXY_GROUP, Cluster, ClusterConfigError, HostFacts, InventoryHost, build_cluster,
    parse_node_lines,
)
from tasks.model.accounting import DBD_GROUP
from tasks.model.settings import CLUSTER, read

ROLES = {"controller": CONTROLLER_GROUP, "compute": COMPUTE_GROUP, "galaxy": GALAXY_GROUP}
SSH_TIMEOUT = 10  # seconds to connect to a host
PARALLEL = 16  # hosts read at once for the model


def load_inventory(path: str, override_data: Mapping[str, Any] | None = None, cwd: str | None = None) -> Inventory:
    """The inventory FILE with its group data, exactly as `pyinfra FILE` loads it from `cwd`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no inventory file {path}")
    with ctx_state.use(State()):  # pyinfra's file loader records the file it runs in the state
        return make_inventory_from_files(path, override_data=dict(override_data or {}), cwd=cwd or os.getcwd())


@dataclass(frozen=True)
class Connection:
    """How pyinfra's SSH connector reaches a host, from its data (pyinfra/connectors/ssh.py names)."""

    hostname: str
    user: str | None
    port: int | None
    key: str | None
    ssh_config: str | None
    strict_host_key_checking: str
    sudo: bool
    sudo_user: str | None

    @classmethod
    def of(cls, name: str, data: Mapping[str, Any]) -> Connection:
        key = data.get("ssh_key")
        return cls(
            hostname=str(data.get("ssh_hostname") or name),
            user=data.get("ssh_user"),
            port=int(data["ssh_port"]) if data.get("ssh_port") else None,
            key=os.path.expanduser(key) if key else None,
            ssh_config=data.get("ssh_config_file"),
            strict_host_key_checking=str(data.get("ssh_strict_host_key_checking", "accept-new")),
            sudo=bool(data.get("_sudo")),
            sudo_user=data.get("_sudo_user"),
        )

    def testinfra_host(self) -> testinfra.host.Host:
        spec = f"{self.user}@{self.hostname}" if self.user else self.hostname
        if self.port:
            spec += f":{self.port}"
        options: dict[str, Any] = {"timeout": SSH_TIMEOUT, "sudo": self.sudo, "sudo_user": self.sudo_user}
        if self.key:
            options["ssh_identity_file"] = self.key
        # testinfra takes "StrictHostKeyChecking no" from an ssh_config file only.
        options["ssh_config"] = self.ssh_config or (_no_strict_host_keys() if self.strict_host_key_checking == "no" else None)
        return testinfra.get_host(f"paramiko://{spec}", **{k: v for k, v in options.items() if v is not None})


@functools.cache
def _no_strict_host_keys() -> str:
    handle, path = tempfile.mkstemp(prefix="pgs-check-", suffix=".ssh_config")
    with os.fdopen(handle, "w") as config:
        config.write("Host *\n    StrictHostKeyChecking no\n")
    return path


@dataclass
class CheckedHost:
    """One inventory host, its roles and its testinfra handle (connected on first use)."""

    name: str
    groups: frozenset[str]
    data: Mapping[str, Any]
    connection: Connection
    connector_keys: frozenset[str] = frozenset()  # its pyinfra connector's own data keys (ssh_user, ...)
    _host: testinfra.host.Host | None = None
    _unreachable: Exception | None = None  # why the first connection failed

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(role for role, group in ROLES.items() if group in self.groups)

    @property
    def host(self) -> testinfra.host.Host:
        """The testinfra host, connected; a host that could not be reached once is not tried again
        (each of its checks fails at once with the same error)."""
        if self._unreachable is not None:
            raise ConnectionError(f"{self.name} is unreachable: {self._unreachable}")
        if self._host is None:
            host = self.connection.testinfra_host()
            try:
                host.backend.client  # connects (paramiko)
            except Exception as error:
                self._unreachable = error
                raise ConnectionError(f"{self.name} is unreachable: {error}") from None
            self._host = host
        return self._host

    def __str__(self) -> str:
        return self.name


class CheckedCluster:
    """The hosts of an inventory, and the cluster model the deploy builds from them."""

    def __init__(self, inventory: Inventory):
        self.hosts = [CheckedHost(h.name, frozenset(h.groups), h.data.dict(), Connection.of(h.name, h.data.dict()),
                                  frozenset(getattr(h.connector_cls, "data_meta", {})))
                      for h in inventory]
        controllers = [h for h in self.hosts if "controller" in h.roles]
        # Cluster-wide settings come from the controller's data, as in tasks/cluster.py.
        self.settings = (controllers or self.hosts)[0].data

    def with_role(self, role: str) -> list[CheckedHost]:
        if role == "galaxy" and not self.settings.get("deploy_galaxy", True):
            return []
        if role == "slurmdbd":
            return self.slurmdbd_hosts()
        return self.hosts_in_group(role)

    def slurmdbd_hosts(self) -> list[CheckedHost]:
        """slurmdbd's host, as tasks/model/accounting.py chooses it: the `slurm_dbd` group's,
        else the controller; none when slurm_accounting is off (the settings' default applies)."""
        if not read(self.settings, CLUSTER)["slurm_accounting"]:
            return []
        return ([h for h in self.hosts if DBD_GROUP in h.groups] or self.hosts_in_group("controller"))[:1]

    def hosts_in_group(self, role: str) -> list[CheckedHost]:
        """The hosts of a role's group, whether or not the role is deployed."""
        return [h for h in self.hosts if role in h.roles]

    def get(self, name: str) -> CheckedHost:
        return next(h for h in self.hosts if h.name == name)

    @functools.cached_property
    def model(self) -> Cluster:
        """The deploy's model of this cluster, from the hosts' facts as they are now.
        Raises ClusterConfigError (the deploy's own message) when the settings are wrong."""
        with ThreadPoolExecutor(max_workers=min(len(self.hosts), PARALLEL)) as pool:
            facts = list(pool.map(_facts, self.hosts))
        specs = [InventoryHost(h.name, h.groups, h.data, f, h.connector_keys) for h, f in zip(self.hosts, facts)]
        controller = self.with_role("controller")
        known = {}
        if controller:
            conf = controller[0].host.run("cat /etc/slurm/slurm.conf /etc/slurm-llnl/slurm.conf 2>/dev/null | grep '^NodeName='")
            known = parse_node_lines(conf.stdout.splitlines())
        return build_cluster(specs, self.settings, known)


def _facts(checked: CheckedHost) -> HostFacts | None:
    """The deploy's facts of a host (tasks.facts.HostProfile); None when it cannot be reached,
    as in a deploy run: the model is built without it, and its own checks fail."""
    try:
        return parse_host_profile(checked.host.check_output(HostProfile().command()).splitlines())
    except Exception:
        return None


def listening_tcp_ports(host: testinfra.host.Host) -> set[int]:
    """The TCP ports something listens on, on any address (IPv4 or IPv6)."""
    return {int(spec.rsplit(":", 1)[1]) for spec in host.socket.get_listening_sockets() if spec.startswith("tcp")}


def odd_ones_out(values: Mapping[str, str], reference_host: str | None = None) -> tuple[str, list[str]]:
    """The value most hosts have (ties: the reference host's) and the hosts that have
    another: with one host edited, it is that host that differs, not the rest."""
    counts = Counter(values.values())
    top = max(counts.values())
    leaders = [value for value, count in counts.items() if count == top]
    reference = values[reference_host] if reference_host in values and values[reference_host] in leaders else leaders[0]
    return reference, sorted(name for name, value in values.items() if value != reference)


__all__ = ["CheckedCluster", "CheckedHost", "ClusterConfigError", "Connection", "listening_tcp_ports", "load_inventory",
           "odd_ones_out"]
