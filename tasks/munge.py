"""MUNGE: one key shared by every host, munged running with --syslog.

The cluster's key is the one its controller has (made by the munge package, or
by this deploy on a controller that has none yet), or the admin's
`munge_key_file`. It is read from the controller and written to every host
through a command's stdin and stdout (tasks.operations), and kept only in this
run's memory: nothing on the deploying machine, so clusters deployed at the same
time from one checkout never see each other's key. A changed key restarts
munged everywhere.

munged refuses to start when its directories are writable by others
("insecure" permissions, munged(8)): the deploy owns their modes.

On a first install the munge package comes with the whole stack's, munged's
start held until this layer has put the cluster's key and drop-in in place
(tasks.packages); munged is then started here, checked.
"""

from __future__ import annotations

import os

from pyinfra import inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks.common import once, project_file
from tasks.model import Cluster
from tasks.operations import config_file, read_secret, restart_checked, run
from tasks.packages import packages_at_once
from tasks.platform import MUNGE_KEY

MUNGE_KEY_BYTES = 128  # what mungekey(8) and Debian's munge package make
DROP_IN = "/etc/systemd/system/munge.service.d/syslog.conf"
# MUNGE's directories, with the owner and modes of Debian's munge package.
MUNGE_DIRS = {"/etc/munge": "0700", "/var/lib/munge": "0711", "/var/log/munge": "0700", "/run/munge": "0755"}
MUNGE_WORKS = "systemctl is-active --quiet munge && munge -n | unmunge > /dev/null"


@once
def cluster_munge_key(cluster: Cluster) -> bytes:
    """The cluster's key: the admin's key file, else the controller's key, else a new one."""
    if cluster.munge_key_file:
        with open(cluster.munge_key_file, "rb") as handle:
            return handle.read()
    controller = inventory.get_host(cluster.controller.inventory_name)
    return read_secret(MUNGE_KEY, controller) or os.urandom(MUNGE_KEY_BYTES)


@deploy("MUNGE")
def install_munge(cluster: Cluster) -> None:
    if not packages_at_once(cluster):
        apt.packages(name="Install munge", packages=["munge"], no_recommends=True)
    configure_munge(cluster)


def configure_munge(cluster: Cluster) -> None:
    """munge's directories, drop-in and key as munge owns them, munged enabled, and restarted
    (checked: a credential decodes) when any of them changed or it is not running (a first
    install: its start was held for its key)."""
    for path, mode in MUNGE_DIRS.items():
        files.directory(name=f"MUNGE directory {path} ({mode}, munge)", path=path, user="munge", group="munge", mode=mode)
    drop_in = files.put(name="munged logs to syslog (systemd drop-in)", src=project_file("munge-syslog.conf"), dest=DROP_IN)
    systemd.daemon_reload(name="Reload systemd for the munge drop-in", _if=drop_in.did_change)
    key = config_file(
        name="The cluster's munge key (through stdin, never in a file others can read)",
        content=cluster_munge_key(cluster),
        dest=MUNGE_KEY,
        user="munge",
        group="munge",
        mode="0400",
        secret=True,
    )
    systemd.service(name="munged enabled", service="munge", running=None, enabled=True)
    restart_checked(
        name="Start or restart munged for its new key or options (checked: a credential decodes)",
        restart="systemctl restart munge",
        healthy=MUNGE_WORKS,
        configs=[],
        log="/var/log/munge/munged.log",
        what="munged",
        unit="munge",
        settle=0,
        _if=lambda: drop_in.did_change() or key.did_change() or not run("systemctl is-active --quiet munge")[0],
    )
