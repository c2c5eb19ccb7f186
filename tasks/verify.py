"""Verification at the end of the deploy: the cluster works, not just its files.

Checks are operations that change nothing (a re-run still reports zero
changes); they run only at execution, poll with a deadline instead of sleeping
a fixed time, and fail the host with what an admin needs to see.
"""

from __future__ import annotations

import json
import shlex
import time

from pyinfra import host, logger
from pyinfra.api import deploy, operation
from pyinfra.operations import files, pip

from tasks.common import project_file
from tasks.model import Cluster, Galaxy
from tasks.operations import fail, log_tail, run, wait_until

SHARE_DIR = "/usr/local/share/pyinfra-galaxy-slurm"
VERIFY_SCRIPT = f"{SHARE_DIR}/slurm-verify.sbatch"
GALAXY_VERIFY_SCRIPT = f"{SHARE_DIR}/galaxy-verify.py"
IDLE_TIMEOUT = 90
JOB_TIMEOUT = 120
GALAXY_START_TIMEOUT = 240
# The Galaxy check runs bioblend from a venv of the deploy's own (Galaxy's venv stays Galaxy's).
VERIFY_VENV = f"{SHARE_DIR}/venv"
BIOBLEND = "bioblend==1.9.0"  # pyinfra's pip.packages compares one exact version: a range would reinstall every run
# The verification user's API key, made once by galaxy-verify.py; root only.
PRIVATE_DIR = "/etc/pyinfra-galaxy-slurm"
GALAXY_VERIFY_KEY = f"{PRIVATE_DIR}/galaxy-verify-user.json"


class CheckFailed(Exception):
    pass


def report(message: str) -> None:
    logger.info(f"{host.print_prefix}{message}")


# sinfo's short states of a node an admin has to act on (resume it once the cause is fixed).
STOPPED_STATES = ("down", "drain", "drng", "drained", "fail", "failg")


def base_state(state: str) -> str:
    """sinfo's short state without its flag suffix (down* = down and not responding)."""
    return state.rstrip("*~#!%$@^-")


def node_states() -> dict[str, str]:
    ok, out = run("sinfo --noheader --Node --format='%N %t'")
    return dict(line.split() for line in out.splitlines() if ok and len(line.split()) == 2)


@operation(is_idempotent=True)
def resume_stopped_nodes(node_names: list[str]):
    """Resume the nodes among `node_names` that are DOWN or DRAINED (on request only)."""
    if not host.state.is_executing:
        return
    for name, state in node_states().items():
        if name in node_names and base_state(state) in STOPPED_STATES:
            yield f"scontrol update nodename={name} state=resume"


@operation(is_idempotent=True)
def slurm_works(node_names: list[str], unreachable: list[str]):
    """Every reachable node idle, srun on each of them, a batch job completed with its output."""
    if not host.state.is_executing:
        return
    if not node_names:
        yield fail(f"no compute node was reachable this run (unreachable: {', '.join(unreachable)})")
        return
    try:
        _nodes_idle(node_names)
        _srun_everywhere(node_names)
        _batch_job(node_names)
    except CheckFailed as error:
        yield fail(str(error))
        return
    if unreachable:
        states = node_states()
        report("not verified, unreachable this run: " + ", ".join(f"{n} ({states.get(n, 'not in slurm.conf')})" for n in unreachable))


def _nodes_idle(node_names: list[str]) -> None:
    started = time.monotonic()
    states: dict[str, str] = {}
    while time.monotonic() - started < IDLE_TIMEOUT:
        states = node_states()
        if any(base_state(states.get(name, "")) in STOPPED_STATES for name in node_names):
            break  # an admin has to act: no point in waiting
        if all(states.get(name) == "idle" for name in node_names):
            report(f"sinfo: {len(node_names)} nodes idle after {time.monotonic() - started:.1f} s")
            return
        time.sleep(1)
    _, reasons = run("sinfo --list-reasons --long")
    not_idle = ", ".join(f"{n}={states.get(n, 'missing')}" for n in node_names if states.get(n) != "idle")
    raise CheckFailed(
        f"nodes not idle: {not_idle}\n{reasons}\nOnce the cause is fixed, re-run with "
        "`--data slurm_resume_nodes=true` (or set it in group_data/all.py) to resume DOWN or DRAINED nodes."
    )


def _srun_everywhere(node_names: list[str]) -> None:
    nodes = ",".join(node_names)
    ok, out = run(f"srun --nodes={len(node_names)} --nodelist={nodes} --time=1 hostname -s", timeout=JOB_TIMEOUT)
    ran_on = sorted(out.split()) if ok else []
    if ran_on != sorted(node_names):
        raise CheckFailed(f"srun on {nodes} ran on {ran_on or 'no node'}:\n{out}")
    report(f"srun -N{len(node_names)}: ran on {', '.join(ran_on)}")


def _batch_job(node_names: list[str]) -> None:
    started = time.monotonic()
    # Only on nodes this run reached: Slurm may not know yet that another one is gone.
    ok, out = run(f"sbatch --parsable --wait --nodes=1 --nodelist={node_names[0]} --output=/tmp/pgs-verify-%j.out {VERIFY_SCRIPT}",
                  timeout=JOB_TIMEOUT)
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


@operation(is_idempotent=True)
def file_present(path: str):
    """Fail the host when `path` does not exist (a file the deploy relies on but does not make)."""
    if host.state.is_executing and not run(f"test -e {shlex.quote(path)}")[0]:
        yield fail(f"{path} does not exist on {host.name}")


def runners_loaded(log: str) -> str:
    """A command that succeeds when a handler loaded its job runners since its last start
    (older lines in the log may be from before a restart)."""
    return f"awk '/will load all configured runner plugins/ {{n = 0}} /Loaded job runner/ {{n++}} END {{exit n == 0}}' {log}"


def galaxy_ready(galaxy: Galaxy, group: str) -> tuple[str, str]:
    """Shell checks for Galaxy under supervisor group `group`: (ready, broken).

    Ready: every program RUNNING, each handler loaded its job runners since its
    last start (older log lines may be from before a restart), the API answers.
    Broken: a program has given up starting.
    """
    handlers = " && ".join(
        f"supervisorctl status {group}:{name} | grep -q RUNNING && {runners_loaded(f'{galaxy.log_dir}/{name}.log')}"
        for name in galaxy.handler_names
    )
    api = f"python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' {galaxy.local_url}/api/version"
    ready = f"! supervisorctl status '{group}:*' | grep -qv RUNNING && {handlers} && {api}"
    broken = f"supervisorctl status '{group}:*' | grep -qE 'FATAL|BACKOFF|EXITED'"
    return ready, broken


@operation(is_idempotent=True)
def galaxy_answers(galaxy: Galaxy, group: str):
    """Wait until Galaxy is ready (see galaxy_ready); else fail with the log tails."""
    if not host.state.is_executing:
        return
    started = time.monotonic()
    ready, broken = galaxy_ready(galaxy, group)
    handler_logs = " ".join(f"{galaxy.log_dir}/{name}.log" for name in galaxy.handler_names)
    if wait_until(ready, GALAXY_START_TIMEOUT, broken=broken):
        _, loaded = run(
            f"for log in {handler_logs}; do tac $log | awk '/Loaded job runner/ {{print}} "
            f"/will load all configured runner plugins/ {{exit}}'; done | grep -o \"Loaded job runner '[^']*' as '[^']*'\" | sort -u"
        )
        report(f"Galaxy answers {galaxy.local_url}/api/version after {time.monotonic() - started:.1f} s; "
               f"{', '.join(loaded.splitlines())}")
        return
    _, status = run(f"supervisorctl status '{group}:*' || true")
    logs = [f"{galaxy.log_dir}/{name}.log" for name in ["web", *galaxy.handler_names]]
    yield fail(f"Galaxy did not come up within {GALAXY_START_TIMEOUT} s ({galaxy.local_url}):\n{status}\n"
               + "\n".join(map(log_tail, logs)))


@operation(is_idempotent=True)
def galaxy_job_through_slurm(command: str, compute_nodes: list[str], expected_user: str):
    """A Galaxy upload job ran through Slurm on a compute node, as the galaxy user; or, on
    a full cluster, it waits in Slurm (PENDING for CPUs) and was withdrawn (see galaxy-verify.py)."""
    if not host.state.is_executing:
        return
    ok, output = run(command, timeout=600)
    try:
        result = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"error": output[-3000:]}
    problems = [] if ok and result.get("ok") else [str(result.get("error", "verification failed"))]
    if result.get("runner") and not result.get("busy") and result.get("node") not in compute_nodes:
        problems.append(f"ran on {result.get('node')!r}, not a compute node ({', '.join(compute_nodes)})")
    if result.get("slurm_user") and result["slurm_user"] != expected_user:
        problems.append(f"the Slurm job ran as {result['slurm_user']}, not {expected_user}")
    if problems:
        yield fail("Galaxy upload job through Slurm failed: " + "; ".join(problems) + f"\n{json.dumps(result, indent=1)}")
        return
    report(galaxy_report_line(result))


def galaxy_report_line(result: dict) -> str:
    """The line an admin reads, from galaxy-verify.py's JSON report."""
    job = (f"Galaxy job {result['galaxy_job_id']} (runner {result['runner']}, handler {result['handler']}) "
           f"= Slurm job {result['slurm_job_id']} ({result['slurm_job_name']})")
    user = f"Galaxy user {result['user']} ({result['user_key']}), verification {result['seconds']} s"
    if result.get("busy"):
        return (f"{job} as {result['slurm_user']}: PENDING ({result['pending_reason']}) for {result['pending_seconds']} s: "
                f"the cluster is full, Galaxy reaches Slurm; Galaxy job deleted, Slurm job removed by "
                f"{result['slurm_removed_by']}; {user}")
    return (f"{job} on {result['node']} as {result['slurm_user']}: {result['slurm_state']}, "
            f"Slurm run time {result['slurm_runtime']}, upload to dataset ok in {result['seconds_to_ok']} s; {user}")


@deploy("Verify")
def verify_slurm(cluster: Cluster) -> None:
    if host.name != cluster.controller.inventory_name:
        return
    files.put(name="Slurm test job script", src=project_file("slurm-verify.sbatch"), dest=VERIFY_SCRIPT, mode="0755")
    if cluster.resume_nodes:
        resume_stopped_nodes(name="Resume DOWN or DRAINED nodes (slurm_resume_nodes)", node_names=cluster.reachable_nodes)
    slurm_works(
        name="Slurm works: nodes idle, srun on all, sbatch job done",
        node_names=cluster.reachable_nodes,
        unreachable=[h.node_name for h in cluster.compute_hosts if not h.reachable],
    )


@deploy("Verify Galaxy")
def verify_galaxy(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name:
        return
    if not cluster.verify_galaxy_job:
        logger.info("Galaxy job verification skipped (verify_galaxy_job is off)")
        return
    if any(not h.reachable for h in cluster.compute_hosts):
        # Slurm may place the job on a node it does not yet know is gone.
        logger.warning(f"Galaxy job verification skipped: {', '.join(cluster.unreachable_hosts)} unreachable")
        return
    files.directory(name="Private directory for the verification user's API key", path=PRIVATE_DIR, mode="0700")
    pip.packages(
        name=f"bioblend in the deploy's own venv {VERIFY_VENV}",
        packages=[BIOBLEND],
        virtualenv=VERIFY_VENV,
        virtualenv_kwargs={"venv": True, "python": "/usr/bin/python3"},
    )
    files.put(name="Galaxy verification script", src=project_file("galaxy-verify.py"), dest=GALAXY_VERIFY_SCRIPT, mode="0755")
    command = (
        f"{VERIFY_VENV}/bin/python {GALAXY_VERIFY_SCRIPT} --url {galaxy.local_url} --secrets {galaxy.secrets_file} "
        f"--user-email {shlex.quote(galaxy.verify_email)} --key-file {GALAXY_VERIFY_KEY}"
    )
    galaxy_job_through_slurm(
        name="A Galaxy upload job runs through Slurm (or waits in Slurm on a full cluster)",
        command=command,
        compute_nodes=cluster.reachable_nodes,
        expected_user=galaxy.user,
    )
