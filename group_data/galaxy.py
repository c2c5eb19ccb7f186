"""Galaxy settings (the host in the `galaxy` group). Every one is declared with its
default in tasks/model/settings.py; these are the ones a site usually sets."""

galaxy_version = "26.1.2"  # installed from PyPI (galaxy-web-apps + galaxy-web-client)
galaxy_install = True  # False: keep the Galaxy already in /srv/galaxy/venv
# A venv made by another Python (e.g. left by an upgrade from Debian 12 to 13: 3.11 -> 3.13)
# is refused before any change; True moves it aside to venv.<time>.pgs-backup and installs
# Galaxy into a new one (config, data and secrets under galaxy_root stay).
galaxy_rebuild_venv = False
galaxy_root = "/srv/galaxy"  # venv, config, data and logs; shared with the compute hosts
galaxy_user = "galaxy"
galaxy_uid = 1500  # the same on every cluster host: jobs run as galaxy there
galaxy_gid = 1500
galaxy_bind = "127.0.0.1:8080"  # put a web server in front for users
galaxy_admin_email = "admin@example.org"
# The verification's own Galaxy user (an ordinary user; its key is kept on the Galaxy host in
# /etc/pyinfra-galaxy-slurm, 0600 root). None: pgs-verify@ the admin's domain.
galaxy_verify_email = None
galaxy_handlers = 1  # job handler processes; more than one wants PostgreSQL

# "drmaa": Galaxy's Slurm runner through slurm-drmaa; "cli": sbatch/squeue through a shell.
galaxy_job_runner = "drmaa"
galaxy_destinations = [
    {"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"},
    {"id": "local", "runner": "local"},
]
galaxy_default_destination = "slurm"

# How compute hosts see galaxy_root: "nfs" (exported by the Galaxy host and mounted
# by the deploy) or "existing" (a shared filesystem the site already mounts there).
shared_fs = "nfs"

# Where libdrmaa comes from (DRMAA runner only). Debian has no package, so the
# default builds the release tarball: give its sha256 (or a local tarball).
slurm_drmaa = {
    "method": "source",  # "source", "package" (apt, e.g. the Galaxy Depot repository) or "path"
    "version": "1.1.6",
    "sha256": None,
    "tarball": None,
}
