"""Scheduled backups: when, where, how many are kept (the parts each host holds: tasks/backup.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What systemd.time(7) OnCalendar takes, loosely: letters, digits and the calendar punctuation.
# The host's `systemd-analyze calendar` has the last word before the timer is written.
CALENDAR_PATTERN = re.compile(r"^[A-Za-z0-9*,:./~ -]+$")
PATH_PATTERN = re.compile(r"^/[A-Za-z0-9_./-]+$")


@dataclass(frozen=True)
class Backups:
    schedule: str  # systemd OnCalendar
    dir: str
    keep: int


def replaced_files_keep_days(value: Any, problems: list[str]) -> int | None:
    """replaced_files_keep_days, checked (None: the deploy's copies are kept)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    problems.append(f"replaced_files_keep_days: {value!r} is not a whole number of days (1 or more); give e.g. 30, "
                    "or None to keep them")
    return None


def backups_from(config: Mapping[str, Any], problems: list[str]) -> Backups | None:
    """The backup settings, checked (None: backup_schedule is None, no scheduled backups)."""
    schedule, directory, keep = config["backup_schedule"], config["backup_dir"], config["backup_keep"]
    if schedule is None:
        return None
    if not isinstance(schedule, str) or not CALENDAR_PATTERN.match(schedule):
        problems.append(f"backup_schedule: {schedule!r} is not a systemd calendar event; give e.g. 'daily' or "
                        "'*-*-* 03:15:00' (systemd.time(7)), or None for no scheduled backups")
    if not isinstance(directory, str) or not PATH_PATTERN.match(directory) or directory.rstrip("/") in ("", "/"):
        problems.append(f"backup_dir: {directory!r} is not an absolute path of its own (letters, digits, '_', '.', "
                        "'-', '/'); give e.g. /var/backups/pyinfra-galaxy-slurm")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        problems.append(f"backup_keep: {keep!r} is not a whole number of backups (1 or more); give e.g. 14")
    return Backups(str(schedule), str(directory).rstrip("/"), keep if isinstance(keep, int) else 1)
