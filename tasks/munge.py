"""MUNGE: one key shared by every host, munged running with --syslog.

The cluster's key is the controller's (made by the munge package on first
install) unless the inventory names a key file. It travels controller -> the
deploying machine (.secrets/, mode 0700) -> every host over SFTP, so its
contents never appear in pyinfra's output. A changed key restarts munged
everywhere.
"""

from __future__ import annotations

import os

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from tasks.cluster import SECRETS_DIR
from tasks.common import any_changed, project_file
from tasks.model import Cluster

MUNGE_KEY = "/etc/munge/munge.key"
DROP_IN = "/etc/systemd/system/munge.service.d/syslog.conf"


@deploy("MUNGE")
def install_munge(cluster: Cluster) -> None:
    apt.packages(name="Install munge", packages=["munge"], no_recommends=True)
    drop_in = files.put(name="munged logs to syslog (systemd drop-in)", src=project_file("munge-syslog.conf"), dest=DROP_IN)
    systemd.daemon_reload(name="Reload systemd for the munge drop-in", _if=drop_in.did_change)
    key = _install_cluster_key(cluster)
    systemd.service(name="munged enabled and running", service="munge", running=True, enabled=True)
    systemd.service(
        name="Restart munged for its new key or options",
        service="munge",
        restarted=True,
        _if=any_changed(drop_in, key),
    )


def _install_cluster_key(cluster: Cluster):
    local_key = cluster.munge_key_file or os.path.join(SECRETS_DIR, cluster.name, "munge.key")
    if cluster.munge_key_file is None and host.name == cluster.controller.inventory_name:
        # Older munge packages do not make a key on install: make one the same way.
        server.shell(
            name="The controller has a munge key",
            commands=[f"mungekey --create --keyfile={MUNGE_KEY} && chown munge:munge {MUNGE_KEY} && chmod 0400 {MUNGE_KEY}"],
            _if=lambda: not host.get_fact(File, path=MUNGE_KEY),
        )
        files.get(name="Fetch the cluster's munge key from the controller", src=MUNGE_KEY, dest=local_key)
    return files.put(
        name="Install the cluster's munge key",
        src=local_key,
        dest=MUNGE_KEY,
        user="munge",
        group="munge",
        mode="0400",
        assume_exists=True,  # fetched from the controller at execution time
    )
