"""slurm-drmaa (libdrmaa.so.1) on the Galaxy host, for Galaxy's DRMAA runner.

Three ways: an apt package from a repository the admin configured (`package`),
an existing library (`path`), or a build from the release tarball (`source`:
downloaded by URL and checked against its sha256, or a local tarball uploaded).
libdrmaa links against libslurm by soname, so a build records what it was built
against and is redone when the version, tarball or libslurm changes.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server

from tasks.model import Cluster, SlurmDrmaa, sha256_of
from tasks.packages import packages_at_once
from tasks.platform import PACKAGES_DRMAA_BUILD
from tasks.checks import file_present

SOURCE_DIR = "/usr/local/src"
# The libslurm the build links against, e.g. libslurm.so.38.0.0.
LIBSLURM_COMMAND = "basename $(readlink -f /usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/libslurm.so) 2>/dev/null || true"


@deploy("slurm-drmaa")
def install_slurm_drmaa(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None or galaxy.drmaa is None or host.name != galaxy.host.inventory_name:
        return
    drmaa = galaxy.drmaa
    installed = packages_at_once(cluster)  # a first install: in the stack's apt run (tasks.packages)
    if drmaa.method == "package" and not installed:
        apt.packages(name=f"Install {drmaa.package}", packages=[drmaa.package], no_recommends=True)
    elif drmaa.method == "source":
        if not installed:
            apt.packages(name="Build tools and Slurm headers for slurm-drmaa", packages=list(PACKAGES_DRMAA_BUILD),
                         no_recommends=True)
        _build_from_release(drmaa)
    file_present(name=f"libdrmaa is at {drmaa.library_path}", path=drmaa.library_path)


def _build_from_release(drmaa: SlurmDrmaa) -> None:
    tarball = f"{SOURCE_DIR}/slurm-drmaa-{drmaa.version}.tar.gz"
    if drmaa.tarball:
        files.put(name="Upload the slurm-drmaa release tarball", src=drmaa.tarball, dest=tarball, mode="0644")
        checksum = sha256_of(drmaa.tarball)
    else:
        files.download(name="Download the slurm-drmaa release tarball", src=drmaa.url, dest=tarball,
                       sha256sum=drmaa.sha256, mode="0644")
        checksum = drmaa.sha256
    # What a build records, followed by the libslurm it was built against.
    stamp_file = f"{drmaa.prefix}/.pyinfra-galaxy-slurm-build"
    stamp = f"slurm-drmaa {drmaa.version} sha256 {checksum} built against"

    def needs_build() -> bool:
        built = host.get_fact(Command, f"cat {stamp_file} 2>/dev/null || true")
        return built != f"{stamp} {host.get_fact(Command, LIBSLURM_COMMAND)}"

    build_dir = f"{SOURCE_DIR}/slurm-drmaa-{drmaa.version}"
    multiarch = "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
    server.shell(
        name=f"Build and install slurm-drmaa {drmaa.version} (when its version or libslurm changed)",
        commands=[
            # No `tar -m`: reset timestamps would make make re-run autotools.
            f"rm -rf {build_dir} && tar -xzf {tarball} -C {SOURCE_DIR}",
            # --with-slurm-*: configure otherwise looks for Slurm next to `srun`.
            (f"cd {build_dir} && ./configure --prefix={drmaa.prefix} --sysconfdir=/etc "
             f"--with-slurm-inc=/usr/include --with-slurm-lib={multiarch} > configure.out 2>&1 "
             "|| { tail -30 configure.out; exit 1; }"),
            f"cd {build_dir} && make -j$(nproc) > make.out 2>&1 || {{ tail -30 make.out; exit 1; }}",
            f"cd {build_dir} && make install > install.out 2>&1 || {{ tail -30 install.out; exit 1; }}",
            # Recorded last: a failed build is retried on the next run.
            f"echo \"{stamp} $({LIBSLURM_COMMAND})\" > {stamp_file}",
        ],
        _if=needs_build,
    )
