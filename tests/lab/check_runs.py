"""`make check` run the way an admin runs it, against the test lab, its JUnit report read back."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from tests.lab.conftest import PROJECT

CHECK_TIMEOUT = 600  # seconds for one `make check`


@dataclass
class CheckRun:
    returncode: int
    output: str  # what `make check` printed
    failed: set[tuple[str, str]]  # (check, host) of every failed or erroring check, from the JUnit XML
    passed: int
    seconds: float
    skipped: set[tuple[str, str]]  # (check, host) of every skipped check

    def report(self) -> str:
        """The report at the end of the output (from its heading on)."""
        lines = self.output.splitlines()
        start = next((i for i, line in enumerate(lines) if "cluster checks: one line per host and check" in line), 0)
        return "\n".join(lines[start:])

    def report_line(self, host: str, check_title: str) -> str | None:
        """The report's line for HOST and a check (by its title), if there is one."""
        return next((line for line in self.output.splitlines() if line.startswith(host + " ") and check_title in line), None)


def make_check(deploy, tmp_path: Path, *make_args: str) -> CheckRun:
    """`make check` as an admin runs it, with the test lab's environment (LAB_INVENTORY: its hosts.json,
    which also records the Galaxy job runner the checks expect)."""
    report = tmp_path / "check-report.xml"
    started = time.monotonic()
    process = subprocess.run(["make", "--no-print-directory", "check", f"CHECK_REPORT={report}", *make_args],
                             cwd=PROJECT, env=deploy.env(), capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    failed, skipped, passed = set(), set(), 0
    if report.exists():
        for case in ElementTree.parse(report).iter("testcase"):
            name = case.get("name", "")
            check, _, host = name.partition("[")
            if case.find("failure") is not None or case.find("error") is not None:
                failed.add((check, host.rstrip("]") or "cluster"))
            elif case.find("skipped") is not None:
                skipped.add((check, host.rstrip("]") or "cluster"))
            else:
                passed += 1
    return CheckRun(process.returncode, process.stdout + process.stderr, failed, passed, time.monotonic() - started, skipped)
