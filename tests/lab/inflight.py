"""Jobs in flight across a deploy: Slurm batch jobs that hold every CPU of the
compute nodes until the test releases them, so their timing is deterministic.

A scenario is: `submit` → `wait_running` → the change (a deploy) →
`assert_running` again (same job ids on the same nodes; the waiting ones still
waiting) → `release` → `assert_completed` (each job COMPLETED, exit 0:0). Each
step is its own method; `Workload` runs them with Galaxy's jobs in flight too.

There is no Slurm accounting in the lab: the final state comes from
`scontrol show job`, which keeps a finished job for MinJobAge (300 s).
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from dataclasses import dataclass, field

JOB_NAME = "pgs-inflight"
# The job's script: it runs until its release file appears on the lab's shared
# /srv/galaxy (bound into every lab host), then exits 0. A job still pending when
# the test releases the others finds the file at once when it starts.
RELEASE_DIR = "/srv/galaxy/lab-test-release"
HELD_SCRIPT = "while [ ! -e {release} ]; do sleep 1; done"
TIME_LIMIT_MINUTES = 30  # a job the test never released ends by itself
POLL = 1
# Why a held job may wait: the CPUs it asks for are held by other jobs in flight
# (squeue(1) JOB REASON CODES), or its node is kept for a job ahead of it, which
# Slurm 24.11 says as ReqNodeNotAvail and 22.05 as "Nodes required ... reserved"
# (the deploy's own check tells a node that is really DOWN or DRAINED).
BUSY_REASONS = ("Resources", "Priority", "ReqNodeNotAvail,_May_be_reserved_for_other_job",
                "Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions")


def job_fields(text: str) -> dict[str, str]:
    """`scontrol --oneliner show job` as a dict."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


@dataclass
class InFlightJobs:
    """Held Slurm batch jobs, submitted as root on the controller (a testinfra host):
    pinned round-robin to the given nodes, as many as asked, at least one per free CPU.
    The ones that find a free CPU run; the others wait PENDING (Resources) behind them."""

    controller: object  # a testinfra host
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> node it runs on ("" while pending)
    finished: dict[str, dict[str, str]] = field(default_factory=dict)  # job id -> scontrol record at the end
    release_file: str = field(default_factory=lambda: f"{RELEASE_DIR}/slurm-{uuid.uuid4().hex}")

    def _run(self, command: str) -> str:
        result = self.controller.run(command)
        assert result.rc == 0, f"{command}: {result.stderr or result.stdout}"
        return result.stdout

    def records(self) -> dict[str, dict[str, str]]:
        return {job_id: job_fields(self._run(f"scontrol --oneliner show job {job_id}")) for job_id in self.jobs}

    def free_cpus(self, node: str) -> int:
        fields = job_fields(self._run(f"scontrol --oneliner show node {node}"))
        return int(fields["CPUTot"]) - int(fields["CPUAlloc"])

    def assert_queue_empty(self, timeout: float = 60) -> None:
        """Wait (bounded) until no job is queued or running; fail naming the ones left."""
        deadline = time.monotonic() + timeout
        queue = self._run("squeue --noheader --format='%i %j %u %T %R'").strip()
        while queue and time.monotonic() < deadline:
            time.sleep(POLL)
            queue = self._run("squeue --noheader --format='%i %j %u %T %R'").strip()
        assert not queue, f"jobs left in the queue before this case (id name user state reason):\n{queue}"

    def submit(self, nodes: list[str], at_least: int = 4) -> None:
        """Jobs of one CPU each, pinned round-robin to `nodes`: one per free CPU there, and
        more up to `at_least` (those wait behind the others)."""
        count = max(at_least, sum(self.free_cpus(node) for node in nodes))
        self._run(f"mkdir -p {RELEASE_DIR}")
        script = shlex.quote(HELD_SCRIPT.format(release=self.release_file))
        for index in range(count):
            out = self._run(
                f"sbatch --parsable --job-name={JOB_NAME} --nodelist={nodes[index % len(nodes)]} --ntasks=1 "
                f"--cpus-per-task=1 --time={TIME_LIMIT_MINUTES} --output=/dev/null --wrap {script}"
            )
            self.jobs[out.strip().split(";")[0]] = ""

    def wait_running(self, timeout: float = 60) -> None:
        """Wait (bounded) until every job runs, or waits PENDING behind the others (and at
        least one runs); then remember where each running one runs."""
        deadline = time.monotonic() + timeout
        records = self.records()
        while time.monotonic() < deadline and not self._settled(records):
            time.sleep(POLL)
            records = self.records()
        assert self._settled(records), f"jobs neither running nor waiting for CPUs: {self._states(records)}"
        self.jobs.update({job_id: r["NodeList"] for job_id, r in records.items() if r.get("JobState") == "RUNNING"})

    @staticmethod
    def _settled(records: dict[str, dict[str, str]]) -> bool:
        states = [(r.get("JobState"), r.get("Reason")) for r in records.values()]
        return (any(state == "RUNNING" for state, _ in states)
                and all(state == "RUNNING" or (state == "PENDING" and reason in BUSY_REASONS) for state, reason in states))

    @staticmethod
    def _states(records: dict[str, dict[str, str]]) -> dict[str, tuple]:
        return {job_id: (r.get("JobState"), r.get("NodeList"), r.get("Reason")) for job_id, r in records.items()}

    def assert_running(self) -> None:
        """Every job that ran still RUNNING on the node it started on; the others still waiting
        for CPUs (or started meanwhile on the node they are pinned to)."""
        records = self.records()
        wrong = {job_id: state for job_id, state in self._states(records).items()
                 if (self.jobs[job_id] and state[:2] != ("RUNNING", self.jobs[job_id]))
                 or (not self.jobs[job_id] and state[0] not in ("PENDING", "RUNNING"))}
        assert not wrong, f"jobs in flight not where they were (running ones by node: {self.jobs}): {wrong}"

    @property
    def running(self) -> int:
        return sum(bool(node) for node in self.jobs.values())

    def release(self) -> None:
        self._run(f"touch {self.release_file}")

    def assert_completed(self, timeout: float = 90) -> dict[str, dict[str, str]]:
        """Wait (bounded) until every job has ended; each must be COMPLETED with exit 0:0."""
        deadline = time.monotonic() + timeout
        records = self.records()
        while time.monotonic() < deadline and any(r.get("JobState") in ("PENDING", "RUNNING", "COMPLETING")
                                                  for r in records.values()):
            time.sleep(POLL)
            records = self.records()
        self.finished.update(records)
        wrong = {job_id: (r.get("JobState"), r.get("ExitCode"), r.get("Reason")) for job_id, r in records.items()
                 if (r.get("JobState"), r.get("ExitCode")) != ("COMPLETED", "0:0")}
        assert not wrong, f"jobs that did not complete with exit 0:0: {wrong}"
        return records

    def cancel(self) -> None:
        """Clean up whatever a failed test left behind."""
        self.controller.run(f"scancel --name={JOB_NAME}; rm -f {self.release_file}")

    def summary(self) -> str:
        done = sum((r.get("JobState"), r.get("ExitCode")) == ("COMPLETED", "0:0") for r in self.finished.values())
        nodes = sorted({node for node in self.jobs.values() if node})
        return (f"{len(self.jobs)} Slurm jobs in flight ({self.running} running on {', '.join(nodes)}, "
                f"{len(self.jobs) - self.running} waiting for CPUs); {done} COMPLETED exit 0:0")


@dataclass
class Workload:
    """What a busy cluster runs while a change is made: `galaxy_count` Galaxy jobs running
    in Slurm (tests/lab/galaxy_jobs.py), then at least `slurm_count` held Slurm batch
    jobs on the compute nodes: as many run as CPUs are left, the others wait for them.
    Every CPU is taken, so the deploy's verification meets a full cluster."""

    slurm: InFlightJobs
    galaxy: object  # a GalaxyJobs
    nodes: list[str]
    galaxy_count: int = 2
    slurm_count: int = 4
    galaxy_jobs: list[dict] = field(default_factory=list)
    galaxy_held: dict[str, dict] = field(default_factory=dict)
    galaxy_final: dict[str, dict] = field(default_factory=dict)

    def start(self) -> None:
        self.galaxy_jobs = self.galaxy.submit(self.galaxy_count)
        self.galaxy_held = self.galaxy.wait_running(self.galaxy_jobs)
        self.slurm.submit(self.nodes, at_least=self.slurm_count)
        self.slurm.wait_running()

    def assert_in_flight(self) -> None:
        """The same Galaxy jobs on the same Slurm jobs and nodes, still running; the Slurm jobs as they were."""
        self.slurm.assert_running()
        assert self.galaxy.status(self.galaxy_jobs) == self.galaxy_held, "Galaxy jobs in flight changed"

    def finish(self) -> None:
        """Release everything; each Slurm job COMPLETED exit 0:0, each Galaxy job's dataset ok (its Slurm job COMPLETED)."""
        self.slurm.release()
        self.galaxy.release(self.galaxy_jobs)
        self.slurm.assert_completed()
        self.galaxy_final = self.galaxy.wait_finished(self.galaxy_jobs)
        wrong = {job_id: state for job_id, state in self.galaxy_final.items()
                 if (state["dataset_state"], state["slurm_state"]) != ("ok", "COMPLETED")
                 or state["external_id"] != self.galaxy_held[job_id]["external_id"]}
        assert not wrong, f"Galaxy jobs that did not end ok on the Slurm job they started with: {wrong}"

    def cancel(self) -> None:
        self.slurm.cancel()
        if self.galaxy_jobs:
            self.galaxy.release(self.galaxy_jobs)

    def summary(self) -> str:
        ok = sum(state["dataset_state"] == "ok" for state in self.galaxy_final.values())
        return f"{self.slurm.summary()}; {len(self.galaxy_jobs)} Galaxy jobs running in Slurm, {ok} ended ok"
