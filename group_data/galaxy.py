"""Galaxy settings, read from the Galaxy host's data (the host in the `galaxy` group).

Nothing is set here: every setting has its default, declared once with its meaning in
tasks/model/settings.py (the README's settings table). Uncomment what your site changes.
"""

# Galaxy's release (from PyPI): one of the releases the deploy supports, listed with the
# settings table; the default is the newest.
# galaxy_version = "<release>"

# Galaxy's admin account, and its users' address.
# galaxy_admin_email = "galaxy-admins@example.org"
# galaxy_server_name = "galaxy.example.org"

# Job handler processes (more than one needs PostgreSQL, the default database).
# galaxy_handlers = 3

# An existing PostgreSQL server instead of Debian's on the Galaxy host (a secret: keep it out
# of the repository, e.g. read it from a root-only file here).
# galaxy_database_url = "postgresql://galaxy:PASSWORD@db.example.org:5432/galaxy"

# HTTPS: a certificate (chain included) and its key, paths on the Galaxy host.
# galaxy_tls_certificate = "/etc/ssl/certs/galaxy.pem"
# galaxy_tls_key = "/etc/ssl/private/galaxy.key"

# Job destinations: Slurm options per destination, the default, and the local runner.
# galaxy_destinations = [
#     {"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"},
#     {"id": "slurm_big", "runner": "slurm", "native_specification": "--ntasks=8 --mem=32000 --partition=main"},
#     {"id": "local", "runner": "local"},
# ]
# galaxy_default_destination = "slurm"

# Galaxy's root when the site already shares one at the same path on every compute host
# (the default exports galaxy_root from the Galaxy host over NFS).
# shared_fs = "existing"
# galaxy_root = "/shared/galaxy"

# slurm-drmaa (the DRMAA runner): Debian has no package, so the default builds the release
# tarball: give its sha256 for the download, or a local tarball.
# slurm_drmaa = {"sha256": "<sha256 of slurm-drmaa-1.1.6.tar.gz>"}
# slurm_drmaa = {"tarball": "/root/slurm-drmaa-1.1.6.tar.gz"}

# The CLI runner (sbatch/squeue through a shell) instead of DRMAA.
# galaxy_job_runner = "cli"

# More galaxy.yml settings.
# galaxy_config_extra = {"brand": "Example Galaxy"}
