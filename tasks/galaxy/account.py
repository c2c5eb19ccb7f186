"""Galaxy's account on every host and its shared directory.

Jobs run as the galaxy user on compute nodes and read and write Galaxy's data
and venv at the same paths there, so the account has the same uid/gid on every
host and the Galaxy root is shared: over NFS from the Galaxy host
(`shared_fs: nfs`) or by a filesystem the site already has (`existing`).
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from tasks.checks import ready_for_galaxy_jobs
from tasks.model import Cluster, ClusterHost, Galaxy

NFS_OPTIONS = "rw,sync,no_subtree_check"


@deploy("Galaxy account and shared directory")
def prepare_galaxy_hosts(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None:
        return
    me = cluster.host(host.name)
    server.group(name=f"Group {galaxy.user} (gid {galaxy.gid})", group=galaxy.user, gid=galaxy.gid)
    server.user(
        name=f"User {galaxy.user} (uid {galaxy.uid})",
        user=galaxy.user,
        uid=galaxy.uid,
        group=galaxy.user,
        home=galaxy.root,
        shell="/bin/bash",
        comment="Galaxy server and its jobs",
        ensure_home=False,
    )
    if me == galaxy.host:
        files.directory(name="Galaxy root", path=galaxy.root, user=galaxy.user, group=galaxy.user, mode="0755")
        if galaxy.shared_fs == "nfs":
            _export_galaxy_root(cluster, galaxy)
    elif "compute" in me.roles:
        if galaxy.shared_fs == "nfs":
            _mount_galaxy_root(galaxy)

    # Every host runs both in this order (gated with _if): an operation only some hosts ran
    # would let pyinfra run the compute hosts' check before the Galaxy host wrote the marker.
    marker, text = cluster.shared_marker
    is_galaxy_host = me == galaxy.host
    files.put(name=f"Marker of the shared directory ({marker}): every compute host must read it",
              src=StringIO(text + "\n"), dest=marker, user=galaxy.user, group=galaxy.user, mode="0644",
              _if=lambda: is_galaxy_host)
    ready_for_galaxy_jobs(name=f"Ready for Galaxy's jobs: the shared {galaxy.root} (the Galaxy host's marker read), "
                               "Galaxy's venv and job directory",
                          root=galaxy.root, marker=marker, text=text, user=galaxy.user, venv=galaxy.venv, python_version=galaxy.python,
                          job_dir=galaxy.job_working_directory, _if=lambda: "compute" in me.roles and not is_galaxy_host)


def _nfs_clients(cluster: Cluster, galaxy: Galaxy) -> list[ClusterHost]:
    return [h for h in cluster.compute_hosts if h != galaxy.host]


def _export_galaxy_root(cluster: Cluster, galaxy: Galaxy) -> None:
    clients = _nfs_clients(cluster, galaxy)
    if not clients:
        return
    apt.packages(name="NFS server", packages=["nfs-kernel-server"], no_recommends=True)
    exports = files.block(
        name=f"Export {galaxy.root} to the compute hosts",
        path="/etc/exports",
        content=nfs_exports_line(galaxy.root, clients),
        marker="# {mark} pyinfra-galaxy-slurm galaxy",
    )
    systemd.service(name="NFS server enabled and running", service="nfs-server", running=True, enabled=True)
    server.shell(name="Re-export NFS shares", commands=["exportfs -ra"], _if=exports.did_change)


def nfs_exports_line(root: str, clients: list[ClusterHost]) -> str:
    return f"{root} " + " ".join(f"{client.address or client.node_name}({NFS_OPTIONS})" for client in clients)


def _mount_galaxy_root(galaxy: Galaxy) -> None:
    device = f"{galaxy.host.address or galaxy.host.node_name}:{galaxy.root}"
    apt.packages(name="NFS client", packages=["nfs-common"], no_recommends=True)
    files.directory(name="Mount point for Galaxy's root", path=galaxy.root)
    files.block(
        name=f"{galaxy.root} from the Galaxy host in /etc/fstab",
        path="/etc/fstab",
        content=f"{device} {galaxy.root} nfs defaults,_netdev 0 0",
        marker="# {mark} pyinfra-galaxy-slurm galaxy",
    )
    server.mount(name=f"Mount {galaxy.root} from the Galaxy host", path=galaxy.root, device=device, fs_type="nfs",
                 options=["defaults", "_netdev"])
