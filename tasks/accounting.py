"""Slurm accounting: slurmdbd and its database, up before slurmctld uses them.

On slurmdbd's host (the `slurm_dbd` group's, else the controller): MariaDB from
Debian with slurmdbd's database and user (unless an existing server is given),
slurmdbd.conf (0600, owner slurm: it holds the database password), and slurmdbd
started or restarted, checked (it listens on DbdPort), rolled back like
slurmctld when a changed slurmdbd.conf keeps it down.

The database password is the admin's `slurm_accounting_storage_pass_file`, or
the one in slurmdbd.conf (read back through a command's stdout), or, on the
first run, a new random one. It reaches MariaDB as SQL on the mysql client's
stdin and slurmdbd.conf through stdin (tasks.operations): never a command
line, a temporary file, or output. pyinfra's mysql.user would put it in the
`mysql -e` command line, visible in `ps`: users are made here instead.

With an existing server (`slurm_accounting_storage_host`) the database and
user are the admin's: the deploy checks, before any change, that the server
answers from slurmdbd's host, and slurmdbd's checked start proves the password.
slurmctld registers its cluster with slurmdbd itself when it first connects
(seen on Slurm 24.11); `cluster_registered` adds it only if that did not happen.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from pyinfra import host, inventory
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, mysql, systemd

from tasks.common import once, render
from tasks.model import Cluster
from tasks.model.accounting import Accounting, read_password_file
from tasks.operations import config_file, read_secret, restart_checked, run, secret_stdin_command
from tasks.packages import first_install, packages_at_once
from tasks.platform import DATABASE_SERVICE, PACKAGES_DATABASE, PACKAGES_DBD, PATHS, STORAGE_TYPE

PASSWORD_BYTES = 24  # secrets.token_urlsafe: 32 characters from [A-Za-z0-9_-]
JOB_TABLE_SUFFIX = "_job_table"  # slurmdbd's tables are <cluster>_job_table, <cluster>_step_table, ...


def slurmdbd_conf_path(accounting: Accounting) -> str:
    return f"{accounting.dbd_host.platform.config_dir}/slurmdbd.conf"


def slurmdbd_up(accounting: Accounting) -> str:
    """slurmdbd is running and listens on DbdPort (its unit is Type=simple: active says little)."""
    return (f"systemctl is-active --quiet slurmdbd && "
            f"ss -Hltn 'sport = :{accounting.dbd_port}' | grep -q LISTEN")


@once
def storage_password(accounting: Accounting) -> str:
    """The database password: the admin's file, else slurmdbd.conf's (a re-run), else a new one."""
    if accounting.storage_pass_file:
        return read_password_file(accounting.storage_pass_file)
    dbd_host = inventory.get_host(accounting.dbd_host.inventory_name)
    conf = read_secret(slurmdbd_conf_path(accounting), dbd_host)
    found = re.search(r"^\s*StoragePass\s*=\s*(\S+)\s*$", conf.decode(errors="replace"), re.M | re.I) if conf else None
    return found.group(1) if found else secrets.token_urlsafe(PASSWORD_BYTES)


def render_slurmdbd_conf(cluster: Cluster, password: str) -> str:
    return render("slurmdbd.conf.j2", cluster=cluster, accounting=cluster.accounting, password=password,
                  log_dir=PATHS.log_dir, storage_type=STORAGE_TYPE)


def native_password_hash(password: str) -> str:
    """MariaDB's mysql_native_password hash (`SELECT PASSWORD('...')`): '*' + SHA1(SHA1(pw)), upper hex."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


@operation(is_idempotent=True)
def database_user(user: str, password: str):
    """The database user slurmdbd logs in as (`user`@localhost) with `password`: created, or its
    password set, only when MariaDB's stored hash differs. The SQL goes through the client's stdin."""
    if not host.state.is_executing:
        yield StringCommand(f"true  # database user {user}@localhost, decided at execution")
        return
    ok, stored = run(f"mysql -N -B -e \"SELECT authentication_string FROM mysql.user "
                     f"WHERE user='{user}' AND host='localhost'\"")
    if ok and stored.strip() == native_password_hash(password):
        return
    sql = (f"CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{password}';\n"
           f"ALTER USER '{user}'@'localhost' IDENTIFIED BY '{password}';\n")
    yield secret_stdin_command(StringCommand("mysql -N -B"), sql, f"setting the password of {user}@localhost")


@deploy("Slurm accounting")
def install_accounting(cluster: Cluster) -> None:
    accounting = cluster.accounting
    if accounting is None or host.name != accounting.dbd_host.inventory_name:
        return
    password = storage_password(accounting)  # at collection: an unreadable slurmdbd.conf stops the run before any change
    installed = packages_at_once(cluster)  # a first install: MariaDB and slurmdbd came in the stack's apt run
    if accounting.local_database:
        if not installed:
            apt.packages(name="Install MariaDB for slurmdbd", packages=list(PACKAGES_DATABASE), no_recommends=True)
        systemd.service(name="MariaDB enabled and running", service=DATABASE_SERVICE, running=True, enabled=True)
        mysql.database(name=f"slurmdbd's database {accounting.storage_loc}", database=accounting.storage_loc)
        database_user(name=f"slurmdbd's database user {accounting.storage_user}@localhost (password through stdin)",
                      user=accounting.storage_user, password=password)
        mysql.privileges(name=f"{accounting.storage_user} may use {accounting.storage_loc}", user=accounting.storage_user,
                         privileges=["ALL"], database=accounting.storage_loc)
    if not installed:
        apt.packages(name="Install slurmdbd", packages=list(PACKAGES_DBD), no_recommends=True)
    files.directory(name="Slurm log directory", path=PATHS.log_dir, user="slurm", group="slurm", mode="0755")
    if accounting.archive_dir:
        # slurmdbd writes purged records here before it deletes them: only slurm reads them.
        files.directory(name=f"Accounting archive {accounting.archive_dir} (0700 slurm)", path=accounting.archive_dir,
                        user="slurm", group="slurm", mode="0700")
    conf_path = slurmdbd_conf_path(accounting)
    conf = config_file(
        name="slurmdbd.conf (0600 slurm: it holds the database password; through stdin)",
        content=render_slurmdbd_conf(cluster, password),
        dest=conf_path,
        user="slurm",
        group="slurm",
        mode="0600",
        secret=True,
    )
    systemd.service(name="slurmdbd enabled", service="slurmdbd", running=None, enabled=True)
    restart_checked(
        name="Start or restart slurmdbd for its new configuration (checked; rolled back if it does not come back)",
        restart="systemctl restart slurmdbd",
        healthy=slurmdbd_up(accounting),
        configs=[conf_path],
        log=f"{PATHS.log_dir}/slurmdbd.log",
        what="slurmdbd",
        unit="slurmdbd",
        # Settling guards a rollback to the previous slurmdbd.conf; a first install has none, and
        # the verification after the Slurm layer reads the cluster back from slurmdbd.
        settle=0 if first_install(cluster) else 2,
        _if=lambda: conf.did_change() or not run(slurmdbd_up(accounting))[0],
    )


def accounting_host_problems(cluster: Cluster) -> list[str]:
    """What the hosts say against the accounting settings, read before any change: the existing
    database server unreachable from slurmdbd's host, or slurmdbd's database already holding
    another cluster's tables."""
    accounting = cluster.accounting
    if accounting is None or not accounting.dbd_host.reachable:
        return []
    dbd_host = inventory.get_host(accounting.dbd_host.inventory_name)
    if not accounting.local_database:
        address = f"{accounting.storage_host}:{accounting.storage_port}"
        answer = dbd_host.get_fact(Command, (
            f"timeout 5 bash -c '</dev/tcp/{accounting.storage_host}/{accounting.storage_port}' "
            f"2>/dev/null && echo open || echo closed"))
        if answer != "open":
            return [f"slurm_accounting_storage_host: {address} does not answer from {dbd_host.name} (slurmdbd's host); "
                    "give a reachable MySQL/MariaDB server, leave it unset for MariaDB on that host, "
                    "or set slurm_accounting = False"]
        return []
    tables = dbd_host.get_fact(Command, (
        f"if command -v mysql >/dev/null && systemctl is-active --quiet {DATABASE_SERVICE}; then "
        f"mysql -N -B -e \"SELECT table_name FROM information_schema.tables WHERE table_schema="
        f"'{accounting.storage_loc}' AND table_name LIKE '%{JOB_TABLE_SUFFIX}'\" 2>/dev/null; fi; true"))
    others = sorted({t[:-len(JOB_TABLE_SUFFIX)] for t in (tables or "").split()} - {cluster.name.lower()})  # Slurm lowercases ClusterName
    if others:
        return [f"slurm_accounting_storage_loc: the database {accounting.storage_loc} on {dbd_host.name} already holds "
                f"the accounting of cluster{'s' if len(others) > 1 else ''} {', '.join(others)}, not {cluster.name}; "
                f"give another slurm_accounting_storage_loc, or set slurm_cluster_name to {others[0]} if this is that cluster"]
    return []


@deploy("Cluster registered in accounting")
def register_cluster(cluster: Cluster) -> None:
    """After the Slurm layer: slurmctld is up and has (usually) registered its cluster itself."""
    if cluster.accounting is None or host.name != cluster.controller.inventory_name:
        return
    cluster_registered(name=f"Cluster {cluster.name} registered in accounting (sacctmgr)", cluster_name=cluster.name)


@operation()
def cluster_registered(cluster_name: str):
    """The cluster in slurmdbd (`sacctmgr -i add cluster`), when `sacctmgr list cluster` lacks it.
    slurmctld registers its cluster itself when it first connects (seen on 24.11: sacctmgr
    lists it right after the first start), so this adds it only when that did not happen."""
    if not host.state.is_executing:
        return
    ok, out = run("sacctmgr -n -P list cluster format=Cluster")
    if ok and cluster_name.lower() in out.split():
        return
    yield StringCommand(f"sacctmgr -i add cluster {cluster_name.lower()}")
