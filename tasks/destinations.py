"""Galaxy's Slurm destinations proved against the live cluster before Galaxy uses them.

`destinations_schedulable` asks Slurm, for each destination whose runner is
"slurm", what it would do with a job carrying the destination's options:
`sbatch --test-only` as the Galaxy user (read-only: no job is queued; one call
per destination) refuses a partition that does not exist or is inactive, more
CPUs or memory than any node has, an account or QOS the user may not use. Slurm
accepts, even with --test-only, a job whose --time exceeds its partition's
MaxTime when EnforcePartLimits=NO (the default; seen on the lab with Slurm
24.11), and then keeps it PENDING forever with reason PartitionTimeLimit: that
case is read from `scontrol show partition` for the partition Slurm picked.
A destination Slurm would never start fails the run before job_conf.xml and the
handlers change.
"""

from __future__ import annotations

import re
import shlex

from pyinfra import host, logger
from pyinfra.api import operation

from tasks.model import Destination, Galaxy
from tasks.native_specification import hms, sbatch_arguments, slurm_time_seconds
from tasks.operations import fail, run
from tasks.slurm_status import node_table

TEST_ONLY_JOB_NAME = "pgs-destination-test"
# sbatch --test-only's answer on success (src/sbatch/sbatch.c): "Job N to start at T using C processors on nodes L in partition P".
_WILL_START = re.compile(r"to start at \S+ using \d+ processors on nodes \S+ in partition (\S+)")
# Its refusals: "allocation failure: <reason>" and "sbatch: error: <reason>".
_REFUSAL_PREFIXES = ("allocation failure: ", "sbatch: error: Batch job submission failed: ", "sbatch: error: ")


def sbatch_test_only_command(galaxy: Galaxy, destination: Destination) -> str:
    """`sbatch --test-only` with the destination's options, as the Galaxy user (whose jobs they are)."""
    arguments = sbatch_arguments(destination.native_specification, galaxy.job_runner)
    return (f"cd / && runuser -u {shlex.quote(galaxy.user)} -- sbatch --test-only --job-name={TEST_ONLY_JOB_NAME} "
            f"{shlex.join(arguments)} --wrap=true 2>&1")


def slurm_reason(output: str) -> str:
    """Slurm's own words from sbatch's refusal (duplicates dropped)."""
    reasons = []
    for line in output.splitlines():
        line = line.strip()
        for prefix in _REFUSAL_PREFIXES:
            if line.startswith(prefix):
                line = line[len(prefix):]
                break
        if line and line not in reasons:
            reasons.append(line)
    return "; ".join(reasons) or "no output"


def requested_seconds(arguments: list[str]) -> int | None:
    """The time limit (seconds) sbatch arguments ask for (the last --time/-t wins), or None."""
    seconds = None
    for index, argument in enumerate(arguments):
        if argument.startswith("--time="):
            seconds = slurm_time_seconds(argument.split("=", 1)[1])
        elif argument == "-t" and index + 1 < len(arguments):
            seconds = slurm_time_seconds(arguments[index + 1])
    return seconds


def partition_field(partition_line: str, name: str) -> str | None:
    """A field of `scontrol show partition --oneliner` output."""
    match = re.search(rf"(?:^|\s){name}=(\S+)", partition_line)
    return match[1] if match else None


def destination_problem(galaxy: Galaxy, index: int, destination: Destination, test_only: tuple[bool, str],
                        partition_line: str | None) -> str | None:
    """Why Slurm would never start a job of this destination, or None.

    test_only: (succeeded, output) of `sbatch_test_only_command`; partition_line: `scontrol
    show partition --oneliner` of the partition sbatch picked (None when refused).
    """
    where = (f"galaxy_destinations[{index}].native_specification ({destination.id}: "
             f"'{destination.native_specification or ''}')")
    arguments = sbatch_arguments(destination.native_specification, galaxy.job_runner)
    ok, output = test_only
    tried = f"sbatch --test-only {shlex.join(arguments)}".rstrip()
    if not ok or not _WILL_START.search(output):
        return (f"{where}: Slurm refuses its jobs: {slurm_reason(output)} ({tried}, as {galaxy.user}). Fix the "
                "destination (or the partition in slurm_partitions), then re-run")
    asked = requested_seconds(arguments)
    max_time = partition_field(partition_line or "", "MaxTime")
    limit = slurm_time_seconds(max_time) if max_time else None
    if asked is not None and limit is not None and asked > limit:
        partition = _WILL_START.search(output)[1]
        return (f"{where}: asks a time limit of {hms(asked)} but partition {partition} has MaxTime={max_time}: "
                "Slurm accepts such a job (EnforcePartLimits off) and keeps it PENDING forever with reason "
                f"PartitionTimeLimit. Ask for at most {hms(limit)}, or raise max_time of "
                f"partition {partition} in slurm_partitions, then re-run")
    return None


@operation(is_idempotent=True)
def destinations_schedulable(galaxy: Galaxy):
    """Fail the run (before job_conf.xml and the handlers change) for every Slurm destination
    Slurm would never start; nothing is queued, nothing changes."""
    if not host.state.is_executing:
        return
    problems = []
    for index, destination in enumerate(galaxy.destinations):
        if destination.runner != "slurm":
            continue
        test_only = run(sbatch_test_only_command(galaxy, destination))
        match = _WILL_START.search(test_only[1]) if test_only[0] else None
        partition_line = run(f"scontrol show partition --oneliner {shlex.quote(match[1])}")[1] if match else None
        problem = destination_problem(galaxy, index, destination, test_only, partition_line)
        stopped = [] if match else sorted(n.describe() for n in node_table().values() if n.health != "healthy")
        if problem and stopped:
            # Slurm plans with usable nodes only: with nodes drained or down its refusal may be
            # about them, not the destination. The node health check (Verify) names them.
            logger.warning(f"{host.name}: destination {destination.id}: Slurm refused a test job "
                           f"({slurm_reason(test_only[1])}) while nodes are not usable: {', '.join(stopped)}; "
                           "not held against the destination (the node health check decides)")
        elif problem:
            problems.append(problem)
    if problems:
        yield fail("Galaxy's destinations checked against Slurm (job_conf.xml and the handlers left as they are):\n"
                   + "\n".join(problems))
