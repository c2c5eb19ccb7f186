"""Jobs in flight across a deploy: Slurm batch jobs that hold every CPU of the
compute nodes until the test releases them, so their timing is deterministic.

A scenario is: `submit` → `assert_running` → the change (a deploy) →
`assert_running` again (same job ids on the same nodes) → `release` →
`assert_completed` (each job COMPLETED, exit 0:0). Each step is its own method,
so other kinds of jobs (Galaxy's) can join the same scenarios.

There is no Slurm accounting in the lab: the final state comes from
`scontrol show job`, which keeps a finished job for MinJobAge (300 s).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field

JOB_NAME = "pgs-inflight"
# The job's script: it runs until SIGUSR1 (`scancel --batch --signal=USR1`), then
# exits 0. `wait` returns at once on a signal, a foreground sleep would not.
HELD_SCRIPT = "trap 'exit 0' USR1; while :; do sleep 1 & wait $!; done"
TIME_LIMIT_MINUTES = 30  # a job the test never released ends by itself
POLL = 1


def job_fields(text: str) -> dict[str, str]:
    """`scontrol --oneliner show job` as a dict."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


@dataclass
class InFlightJobs:
    """Held Slurm batch jobs, submitted as root on the controller (`run` = testinfra host.run)."""

    controller: object  # a testinfra host
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> node it runs on
    finished: dict[str, dict[str, str]] = field(default_factory=dict)  # job id -> scontrol record at the end

    def _run(self, command: str) -> str:
        result = self.controller.run(command)
        assert result.rc == 0, f"{command}: {result.stderr or result.stdout}"
        return result.stdout

    def records(self) -> dict[str, dict[str, str]]:
        return {job_id: job_fields(self._run(f"scontrol --oneliner show job {job_id}")) for job_id in self.jobs}

    def cpus(self, node: str) -> int:
        return int(job_fields(self._run(f"scontrol --oneliner show node {node}"))["CPUTot"])

    def assert_queue_empty(self, timeout: float = 60) -> None:
        """Wait (bounded) until no job is queued or running; fail naming the ones left."""
        deadline = time.monotonic() + timeout
        queue = self._run("squeue --noheader --format='%i %j %u %T %R'").strip()
        while queue and time.monotonic() < deadline:
            time.sleep(POLL)
            queue = self._run("squeue --noheader --format='%i %j %u %T %R'").strip()
        assert not queue, f"jobs left in the queue before this case (id name user state reason):\n{queue}"

    def submit(self, nodes: list[str]) -> None:
        """One single-CPU job per CPU of each node in `nodes`: together they hold all its CPUs."""
        for node in nodes:
            for _ in range(self.cpus(node)):
                out = self._run(
                    f"sbatch --parsable --job-name={JOB_NAME} --nodelist={node} --ntasks=1 --cpus-per-task=1 "
                    f"--time={TIME_LIMIT_MINUTES} --output=/dev/null --wrap {shlex.quote(HELD_SCRIPT)}"
                )
                self.jobs[out.strip().split(";")[0]] = node

    def wait_running(self, timeout: float = 60) -> None:
        """Wait (bounded) until every job has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(record.get("JobState") == "RUNNING" for record in self.records().values()):
                return
            time.sleep(POLL)
        self.assert_running()

    def assert_running(self) -> None:
        """Every job RUNNING, on the node it was started on."""
        records = self.records()
        wrong = {job_id: (record.get("JobState"), record.get("NodeList"), record.get("Reason"))
                 for job_id, record in records.items()
                 if record.get("JobState") != "RUNNING" or record.get("NodeList") != self.jobs[job_id]}
        assert not wrong, f"jobs not RUNNING where they started (expected {self.jobs}): {wrong}"

    def release(self) -> None:
        for job_id in self.jobs:
            self._run(f"scancel --batch --signal=USR1 {job_id}")

    def assert_completed(self, timeout: float = 60) -> dict[str, dict[str, str]]:
        """Wait (bounded) until every job has ended; each must be COMPLETED with exit 0:0."""
        deadline = time.monotonic() + timeout
        records = self.records()
        while time.monotonic() < deadline and any(r.get("JobState") in ("RUNNING", "COMPLETING") for r in records.values()):
            time.sleep(POLL)
            records = self.records()
        self.finished.update(records)
        wrong = {job_id: (r.get("JobState"), r.get("ExitCode"), r.get("Reason")) for job_id, r in records.items()
                 if (r.get("JobState"), r.get("ExitCode")) != ("COMPLETED", "0:0")}
        assert not wrong, f"jobs that did not complete with exit 0:0: {wrong}"
        return records

    def cancel(self) -> None:
        """Clean up whatever a failed test left behind."""
        self.controller.run(f"scancel --name={JOB_NAME}")

    def summary(self) -> str:
        done = sum((r.get("JobState"), r.get("ExitCode")) == ("COMPLETED", "0:0") for r in self.finished.values())
        nodes = sorted(set(self.jobs.values()))
        return f"{len(self.jobs)} jobs in flight on {', '.join(nodes)}; {done} COMPLETED exit 0:0"
