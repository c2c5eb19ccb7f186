"""Slurm accounting's part of the model: where slurmdbd and its database run.

slurmdbd runs on the host of the optional group `slurm_dbd` (else the
controller). Its database is a MariaDB from Debian on that host, or an existing
MySQL/MariaDB server (`slurm_accounting_storage_host`), whose database and user
the admin made, with the password in `slurm_accounting_storage_pass_file`.
Rules from slurmdbd.conf(5) (StorageHost/Port/User/Pass/Loc) and
slurm.conf(5) (AccountingStorageType/Host/Port).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.model.hosts import CONTROLLER_GROUP, ClusterHost, InventoryHost
from tasks.model.problems import check_name
from tasks.model.settings import BY_NAME

DBD_GROUP = "slurm_dbd"
DBD_PORT = 6819  # slurmdbd's default DbdPort
# slurmdbd.conf takes a value up to the end of the line, '#' starts a comment; quotes
# and backslashes would have to be escaped for SQL too: refused rather than escaped.
# slurmdbd.conf(5): what Purge*After keys take, and which Archive* key goes with each.
PURGE_KEYS = {"PurgeEventAfter": "ArchiveEvents", "PurgeJobAfter": "ArchiveJobs", "PurgeResvAfter": "ArchiveResvs",
              "PurgeStepAfter": "ArchiveSteps", "PurgeSuspendAfter": "ArchiveSuspend", "PurgeTXNAfter": "ArchiveTXN",
              "PurgeUsageAfter": "ArchiveUsage"}
PURGE_PATTERN = re.compile(r"^[1-9][0-9]*(hour|day|month)s?$")
PASSWORD_PATTERN = re.compile(r"^[^\s#'\"\\]+$")
DATABASE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Accounting:
    """slurmdbd and its database, as slurm.conf and slurmdbd.conf describe them."""

    dbd_host: ClusterHost  # runs slurmdbd
    storage_host: str | None  # None: a MariaDB this deploy installs on dbd_host
    storage_port: int
    storage_user: str
    storage_loc: str  # the database
    storage_pass_file: str | None  # None: a password made once and kept in slurmdbd.conf
    dbd_port: int = DBD_PORT
    purge: Mapping[str, str] = field(default_factory=dict)  # slurmdbd.conf Purge*After -> e.g. "12month"
    archive_dir: str | None = None  # purged records archived here first (None: not archived)

    @property
    def archive(self) -> dict[str, str]:
        """slurmdbd.conf's Archive* lines: each kind purged is archived first, when there is an archive."""
        return {PURGE_KEYS[key]: "yes" for key in self.purge} if self.archive_dir else {}

    @property
    def local_database(self) -> bool:
        return self.storage_host is None

    @property
    def storage_address(self) -> str:
        """StorageHost as slurmdbd reaches it."""
        return self.storage_host or "localhost"


def read_password_file(path: str) -> str:
    """The first line of a password file, without its line end ("" when empty).

    Raises OSError when it cannot be read.
    """
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")


def accounting_from(config: Mapping[str, Any], hosts: list[InventoryHost], cluster_hosts: list[ClusterHost],
                    problems: list[str]) -> Accounting | None:
    """The cluster's accounting (None when `slurm_accounting` is off), its problems appended."""
    enabled = config["slurm_accounting"]
    if not isinstance(enabled, bool):
        problems.append(f"slurm_accounting: {enabled!r} is not True or False")
        return None
    dbd_hosts = [h for h in hosts if DBD_GROUP in h.groups]
    if not enabled:
        return None
    if len(dbd_hosts) > 1:
        problems.append(f"group {DBD_GROUP}: has {len(dbd_hosts)} hosts ({', '.join(h.name for h in dbd_hosts)}); "
                        f"list at most one (none: slurmdbd runs on the controller)")
        return None
    chosen = dbd_hosts[0] if dbd_hosts else next((h for h in hosts if CONTROLLER_GROUP in h.groups), None)
    dbd_host = next((h for h in cluster_hosts if chosen is not None and h.inventory_name == chosen.name), None)
    if dbd_host is None:
        return None  # no controller: reported by the cluster's own checks
    if not dbd_host.reachable:
        problems.append(f"host {dbd_host.inventory_name} (slurmdbd) is unreachable; accounting needs it: bring it "
                        "back and re-run, or set slurm_accounting = False")

    storage_host = config["slurm_accounting_storage_host"]
    port = config["slurm_accounting_storage_port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(f"slurm_accounting_storage_port: {port!r} is not a TCP port (1-65535); MariaDB's is 3306")
        port = 3306
    user = str(config["slurm_accounting_storage_user"])
    loc = str(config["slurm_accounting_storage_loc"])
    check_name(user, "slurm_accounting_storage_user", problems)
    if not DATABASE_NAME_PATTERN.match(loc):
        problems.append(f"slurm_accounting_storage_loc: '{loc}' is not a database name; use letters, digits and '_'")
    pass_file = config["slurm_accounting_storage_pass_file"]
    if storage_host is not None and pass_file is None:
        problems.append(f"slurm_accounting_storage_pass_file: needed with slurm_accounting_storage_host "
                        f"({storage_host}): the existing server's password for user {user}, in a file only you can read")
    if pass_file is not None:
        problems.extend(password_file_problems(str(pass_file)))
    return Accounting(
        dbd_host=dbd_host,
        storage_host=None if storage_host is None else str(storage_host),
        storage_port=port,
        storage_user=user,
        storage_loc=loc,
        storage_pass_file=None if pass_file is None else str(pass_file),
        purge=purge_from(config["slurm_accounting_purge"], problems),
        archive_dir=archive_dir_from(config["slurm_accounting_archive_dir"], problems),
    )


def purge_from(raw: Any, problems: list[str]) -> dict[str, str]:
    """slurm_accounting_purge, over the default: keys given replace the default's; None keeps that kind forever."""
    if not isinstance(raw, Mapping):
        problems.append("slurm_accounting_purge: must be a mapping like {'PurgeJobAfter': '12month'}")
        return {}
    merged = {**BY_NAME["slurm_accounting_purge"].default, **raw}
    purge = {}
    for key, value in merged.items():
        if key not in PURGE_KEYS:
            problems.append(f"slurm_accounting_purge: unknown {key}; use {', '.join(PURGE_KEYS)}")
        elif value is not None and not PURGE_PATTERN.match(str(value)):
            problems.append(f"slurm_accounting_purge: {key}={value!r} is not a duration slurmdbd takes: give a number "
                            "and hours, days or months (e.g. '12month'), or None to keep them forever")
        elif value is not None:
            purge[key] = str(value)
    return purge


def archive_dir_from(raw: Any, problems: list[str]) -> str | None:
    if raw is not None and not (isinstance(raw, str) and raw.startswith("/") and " " not in raw):
        problems.append(f"slurm_accounting_archive_dir: {raw!r} is not an absolute path without spaces; "
                        "give e.g. /var/lib/slurm/accounting-archive, or None not to archive")
        return None
    return raw


def password_file_problems(path: str) -> list[str]:
    """What is wrong with a database password file: unreadable, empty, or a password slurmdbd.conf cannot hold."""
    where = f"slurm_accounting_storage_pass_file: {path}"
    if not os.path.isfile(path):
        return [f"{where} does not exist; give the path of a file holding the database password"]
    try:
        password = read_password_file(path)
    except (OSError, UnicodeDecodeError) as error:
        return [f"{where} cannot be read ({error.__class__.__name__}: {getattr(error, 'strerror', None) or error}); "
                "make it readable by the user running pyinfra (and nobody else)"]
    if not password:
        return [f"{where} is empty; put the database password on its first line"]
    if not PASSWORD_PATTERN.match(password):
        return [f"{where}: the password has a space, '#', a quote or a backslash, which slurmdbd.conf cannot hold; "
                "choose one without"]
    if os.stat(path).st_mode & 0o077:
        return [f"{where} is readable by other users; chmod 600 it"]
    return []
