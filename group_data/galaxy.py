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
galaxy_bind = "127.0.0.1:8080"  # gunicorn, loopback only: nginx serves Galaxy to users
galaxy_admin_email = "admin@example.org"
# The verification's own Galaxy user (an ordinary user; its key is kept on the Galaxy host in
# /etc/pyinfra-galaxy-slurm, 0600 root). None: pgs-verify@ the admin's domain.
galaxy_verify_email = None
galaxy_handlers = 2  # job handler processes (db-skip-locked); more than one needs PostgreSQL

# Galaxy's database: "postgresql" (Debian's, on the Galaxy host; peer authentication, no
# password) or "sqlite" (a one-host trial, galaxy_handlers = 1).
galaxy_database = "postgresql"
galaxy_database_url = None  # an existing server instead: "postgresql://USER:PASSWORD@HOST:5432/DB" (a secret)
galaxy_database_fresh = False  # True: start on an empty database although the one in use holds data
# nginx in front: Galaxy at http://<galaxy host>:<galaxy_http_port>/, static files from nginx.
galaxy_http_port = 80
galaxy_https_port = 443
galaxy_tls_certificate = None  # TLS: both paths, on the Galaxy host (e.g. /etc/ssl/certs/galaxy.pem)
galaxy_tls_key = None  # e.g. /etc/ssl/private/galaxy.key (the deploy makes it 0600 root)
galaxy_server_name = "_"  # nginx server_name; "_": any
galaxy_upload_max_size = "10g"  # nginx client_max_body_size

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
