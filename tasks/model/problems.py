"""How the model reports what is wrong: every problem found, at once."""

from __future__ import annotations

import re
from typing import Any

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ClusterConfigError(Exception):
    """The inventory describes a cluster that cannot be deployed; nothing was changed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the inventory has problems; no host was changed:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def check_positive_int(value: Any, where: str, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{where}: {value!r} is not a positive whole number")


def check_name(name: str, where: str, problems: list[str]) -> None:
    if not NAME_PATTERN.match(name):
        problems.append(f"{where}: '{name}' is not a valid name; use letters, digits, '_', '.' or '-'")


def check_unique(names: list[str], what: str, problems: list[str], fix: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            problems.append(f"{what} '{name}' appears more than once; {fix}")
        seen.add(name)
