"""Galaxy's database: Debian's PostgreSQL on the Galaxy host, its role and database.

The role is named as the galaxy OS user and Galaxy connects over the local
socket, where Debian's pg_hba.conf allows peer authentication ("local all all
peer"): no password exists at all. An existing server (galaxy_database_url)
brings its own role, database and credentials: nothing is installed then.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, postgres, systemd

from tasks.model import Cluster
from tasks.model.database import DATABASE_NAME
from tasks.packages import packages_at_once
from tasks.platform import PACKAGES_POSTGRESQL


@deploy("Galaxy's database")
def install_database(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name or not galaxy.database.local_postgresql:
        return
    version = galaxy.host.platform.postgresql
    if not packages_at_once(cluster):  # a first install: in the stack's apt run (tasks.packages)
        apt.packages(name=f"PostgreSQL {version} (Debian's)", packages=list(PACKAGES_POSTGRESQL), no_recommends=True)
    systemd.service(name=f"PostgreSQL {version} enabled and running", service="postgresql",
                    running=True, enabled=True)
    # psql runs as the postgres superuser (peer authentication), through su as this run's root.
    as_postgres = {"_su_user": "postgres", "_su_shell": "/bin/sh"}
    postgres.role(name=f"PostgreSQL role {galaxy.user} (peer authentication, no password)", role=galaxy.user,
                  login=True, **as_postgres)
    postgres.database(name=f"PostgreSQL database {DATABASE_NAME} owned by {galaxy.user}", database=DATABASE_NAME,
                      owner=galaxy.user, encoding="UTF8", template="template0", **as_postgres)
