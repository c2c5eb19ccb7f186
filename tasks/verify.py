"""Verification at the end of the deploy: the cluster works, not just its files.

Checks are operations that change nothing (a re-run still reports zero
changes); they run only at execution, poll with a deadline instead of sleeping
a fixed time, and fail the host with what an admin needs to see.
"""

from __future__ import annotations

import shlex
import time

from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.operations import files

from tasks.common import project_file
from tasks.model import Cluster

VERIFY_SCRIPT = "/usr/local/share/pyinfra-galaxy-slurm/slurm-verify.sbatch"
IDLE_TIMEOUT = 90
JOB_TIMEOUT = 120


class CheckFailed(Exception):
    pass


def run(command: str, timeout: int = 60) -> tuple[bool, str]:
    ok, output = host.run_shell_command(StringCommand(command), _timeout=timeout)
    return ok, output.stdout if ok else output.output


def fail(message: str):
    """A command that fails with `message`: pyinfra prints it and fails the host."""
    return StringCommand(f"printf '%s\\n' {shlex.quote(message)} >&2; exit 1")


def report(message: str) -> None:
    logger.info(f"{host.print_prefix}{message}")


@operation(is_idempotent=True)
def slurm_works(node_names: list[str]):
    """Every node idle, srun on every node, a batch job completed with its output."""
    if not host.state.is_executing:
        return
    try:
        _nodes_idle(node_names)
        _srun_everywhere(node_names)
        _batch_job()
    except CheckFailed as error:
        yield fail(str(error))


def _nodes_idle(node_names: list[str]) -> None:
    started = time.monotonic()
    states: dict[str, str] = {}
    while time.monotonic() - started < IDLE_TIMEOUT:
        ok, out = run("sinfo --noheader --Node --format='%N %t'")
        states = dict(line.split() for line in out.splitlines() if ok and len(line.split()) == 2)
        if all(states.get(name) == "idle" for name in node_names):
            report(f"sinfo: {len(node_names)} nodes idle after {time.monotonic() - started:.1f} s")
            return
        time.sleep(1)
    _, reasons = run("sinfo --list-reasons --long")
    not_idle = ", ".join(f"{n}={states.get(n, 'missing')}" for n in node_names if states.get(n) != "idle")
    raise CheckFailed(f"nodes not idle after {IDLE_TIMEOUT} s: {not_idle}\n{reasons}")


def _srun_everywhere(node_names: list[str]) -> None:
    nodes = ",".join(node_names)
    ok, out = run(f"srun --nodes={len(node_names)} --nodelist={nodes} --time=1 hostname -s", timeout=JOB_TIMEOUT)
    ran_on = sorted(out.split()) if ok else []
    if ran_on != sorted(node_names):
        raise CheckFailed(f"srun on {nodes} ran on {ran_on or 'no node'}:\n{out}")
    report(f"srun -N{len(node_names)}: ran on {', '.join(ran_on)}")


def _batch_job() -> None:
    started = time.monotonic()
    ok, out = run(f"sbatch --parsable --wait --output=/tmp/pgs-verify-%j.out {VERIFY_SCRIPT}", timeout=JOB_TIMEOUT)
    if not ok:
        raise CheckFailed(f"sbatch test job failed:\n{out}")
    job_id = out.strip().split(";")[0]
    ok, node = run(f"scontrol show job {job_id} | sed -n 's/.* NodeList=\\([^ ]*\\).*/\\1/p' | head -1")
    node = node.strip()
    ok, output = run(f"srun --nodes=1 --nodelist={node} --time=1 sh -c 'cat /tmp/pgs-verify-{job_id}.out && rm -f /tmp/pgs-verify-{job_id}.out'")
    expected = f"node={node} user=root job={job_id}"
    if not ok or output.strip() != expected:
        raise CheckFailed(f"sbatch job {job_id} on {node or '?'}: output {output.strip()!r}, expected {expected!r}")
    report(f"sbatch job {job_id} completed on {node} in {time.monotonic() - started:.1f} s")


@deploy("Verify")
def verify_slurm(cluster: Cluster) -> None:
    if host.name != cluster.controller.inventory_name:
        return
    files.put(name="Slurm test job script", src=project_file("slurm-verify.sbatch"), dest=VERIFY_SCRIPT, mode="0755")
    slurm_works(name="Slurm works: nodes idle, srun on all, sbatch job done", node_names=[n.name for n in cluster.nodes])
