"""Every cluster host resolves every other, and package lists are fresh."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files

from tasks.model import Cluster
from tasks.platform import PRIVATE_DIR

APT_CACHE_SECONDS = 3600


@deploy("Cluster hosts")
def configure_hosts(cluster: Cluster) -> None:
    if cluster.manage_etc_hosts:
        files.block(
            name="Every cluster host resolves every other (/etc/hosts)",
            path="/etc/hosts",
            content=[f"{h.address}\t{h.node_name}" for h in cluster.hosts],
            marker="# {mark} pyinfra-galaxy-slurm cluster hosts",
        )
    # Every layer's secrets and keys on a host (the health check's and backups' settings, Galaxy's API keys).
    files.directory(name=f"The deploy's private directory {PRIVATE_DIR} (0700 root)", path=PRIVATE_DIR, user="root",
                    group="root", mode="0700")
    apt.update(name="Package lists are fresh", cache_time=APT_CACHE_SECONDS)
