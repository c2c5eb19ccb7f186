"""The Galaxy check: a Galaxy upload job proved to run through Slurm (galaxy-verify.py, with
bioblend), and a job through each further destination; on a re-run started ahead, beside the
layers, and kept only when nothing changed."""

from __future__ import annotations

import hashlib
import json
import shlex

from lxml import etree
from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.api.state import BaseStateCallback
from pyinfra.facts.files import Sha1File

from tasks.checks import CheckFailed, report
from tasks.galaxy.config import GALAXY_START_TIMEOUT, SUPERVISOR_GROUP, galaxy_ready, handlers_restart
from tasks.galaxy.keys import (
    GALAXY_ADMIN_KEY, GALAXY_VERIFY_KEY, GALAXY_VERIFY_SCRIPT, galaxy_verify_report, run_galaxy_verify, verify_command,
)
from tasks.model.jobconf import build_job_conf, verification_tools
from tasks.model import Cluster, Galaxy
from tasks.operations import changed_operations, privilege_arguments, rolled_back, run, wait_until
from tasks.verify.slurm import job_accounted

# The Galaxy job check started ahead on a re-run (start_galaxy_check_ahead): its systemd unit, and
# its report, in a directory only root reads.
RUN_DIR = "/run/pyinfra-galaxy-slurm"
AHEAD_UNIT = "pgs-galaxy-check-ahead"
AHEAD_REPORT = f"{RUN_DIR}/galaxy-check-ahead.json"
GALAXY_CHECK_TIMEOUT = 600  # galaxy-verify.py's own --timeout is 300 s per job


def destination_params(galaxy: Galaxy, destination_id: str) -> dict[str, str]:
    """The params job_conf.xml gives a destination (its Slurm options: nativeSpecification for
    the DRMAA runner, job_<option> for the CLI one), read from the file the deploy writes."""
    root = etree.fromstring(build_job_conf(galaxy))
    destination = next(d for d in root.iterfind("destinations/destination") if d.get("id") == destination_id)
    return {param.get("id"): param.text or "" for param in destination.iterfind("param")}


@operation(is_idempotent=True)
def galaxy_job_through_slurm(command: str, compute_nodes: list[str], expected_user: str, galaxy: Galaxy,
                             group: str, accounting: bool = False):
    """A Galaxy upload job ran through Slurm on a compute node, as the galaxy user; or, on
    a full cluster, it waits in Slurm (PENDING for CPUs) and was withdrawn (see galaxy-verify.py).

    When it failed and this run replaced job_conf.xml, the previous one is put back and the
    handlers restarted (like slurm.conf after slurmctld refused it); the run fails saying so."""
    if not host.state.is_executing:
        return
    ok, result, ahead = galaxy_check_result(command)
    problems = [] if ok and result.get("ok") else [str(result.get("error", "verification failed"))]
    if result.get("runner") and not result.get("busy") and result.get("node") not in compute_nodes:
        problems.append(f"ran on {result.get('node')!r}, not a compute node ({', '.join(compute_nodes)})")
    if result.get("slurm_user") and result["slurm_user"] != expected_user:
        problems.append(f"the Slurm job ran as {result['slurm_user']}, not {expected_user}")
    problems += _galaxy_job_accounted(result) if accounting and not problems else []
    if problems:
        ready, broken = galaxy_ready(galaxy, group)
        yield from rolled_back(
            handlers_restart(galaxy, group), ready, [galaxy.job_conf], "Galaxy's job configuration",
            "failed its verification (a Galaxy job through Slurm did not end ok) and is rolled back",
            "Galaxy upload job through Slurm failed: " + "; ".join(problems) + f"\n{json.dumps(result, indent=1)}",
            timeout=GALAXY_START_TIMEOUT, settle=0, broken=broken,
        )
        return
    report(galaxy_report_line(result) + (f" ({ahead})" if ahead else ""))
    for line in destination_report_lines(result):
        report(line)


def destination_report_lines(result: dict) -> list[str]:
    """One line per further destination's job (galaxy-verify.py's report["destinations"][1:])."""
    lines = []
    for job in result.get("destinations", [])[1:]:
        where = f"Galaxy job {job['galaxy_job_id']} (tool {job['tool']}) = Slurm job {job.get('slurm_job_id')}"
        if job.get("busy"):
            lines.append(f"destination {job['destination']}: {where} PENDING ({job.get('pending_reason')}): the cluster "
                         "is full, Galaxy reaches Slurm; withdrawn")
        else:
            lines.append(f"destination {job['destination']}: {where} on {job.get('node')}, partition {job.get('partition')}, "
                         f"time limit {job.get('time_limit')}, GALAXY_SLOTS={job.get('galaxy_slots')} "
                         f"GALAXY_MEMORY_MB={job.get('galaxy_memory_mb')} (Slurm gave {job.get('slurm_allocation')}): "
                         f"{job.get('slurm_state')}, dataset ok in {job.get('seconds_to_ok')} s")
    return lines


def _galaxy_job_accounted(result: dict) -> list[str]:
    """The Galaxy job's Slurm job in `sacct` (COMPLETED 0:0), reported; or the problem.
    A job withdrawn on a full cluster was cancelled: nothing to look for."""
    if result.get("busy") or not str(result.get("slurm_job_id", "")).isdigit():
        return []
    try:
        report(job_accounted(str(result["slurm_job_id"])))
    except CheckFailed as error:
        return [str(error)]
    return []


def galaxy_report_line(result: dict) -> str:
    """The line an admin reads, from galaxy-verify.py's JSON report."""
    where = f"destination {result['destination']}, " if result.get("destination") else ""
    job = (f"Galaxy job {result['galaxy_job_id']} ({where}runner {result['runner']}, handler {result['handler']}) "
           f"= Slurm job {result['slurm_job_id']} ({result['slurm_job_name']})")
    user = f"Galaxy user {result['user']} ({result['user_key']}), verification {result['seconds']} s"
    if result.get("busy"):
        return (f"{job} as {result['slurm_user']}: PENDING ({result['pending_reason']}) for {result['pending_seconds']} s: "
                f"the cluster is full, Galaxy reaches Slurm; Galaxy job deleted, Slurm job removed by "
                f"{result['slurm_removed_by']}; {user}")
    return (f"{job} on {result['node']} as {result['slurm_user']}: {result['slurm_state']}, "
            f"Slurm run time {result['slurm_runtime']}, upload to dataset ok in {result['seconds_to_ok']} s; {user}")


def galaxy_check_wanted(cluster: Cluster, say_why_not: bool = True) -> bool:
    """Whether the Galaxy job check runs on this host (the Galaxy host), saying why not."""
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name:
        return False
    if not cluster.verify_galaxy_job:
        if say_why_not:
            logger.info("Galaxy job verification skipped (verify_galaxy_job is off)")
        return False
    if any(not h.reachable for h in cluster.compute_hosts):
        # Slurm may place the job on a node it does not yet know is gone.
        if say_why_not:
            logger.warning(f"Galaxy job verification skipped: {', '.join(cluster.unreachable_hosts)} unreachable")
        return False
    return True


def galaxy_check_command(galaxy: Galaxy) -> str:
    """galaxy-verify.py's command for the upload through the default destination and a job
    through each further one, with the params job_conf.xml gives them."""
    tool_destinations = [[destination_id, tool_id, destination_params(galaxy, destination_id)]
                         for destination_id, tool_id in verification_tools(galaxy)]
    return verify_command(
        galaxy, f"--destination {shlex.quote(galaxy.default_destination)}",
        f"--destination-params {shlex.quote(json.dumps(destination_params(galaxy, galaxy.default_destination)))}",
        f"--tool-destinations {shlex.quote(json.dumps(tool_destinations))}",
    )


class GalaxyCheckAhead:
    """The Galaxy hosts whose job check runs ahead in this run (filled at execution)."""

    started: set[str] = set()
    watching = False  # StopCheckAheadOnFailure is registered


class StopCheckAheadOnFailure(BaseStateCallback):
    """A host that fails an operation runs none after it, so its check started ahead would outlive
    the run (and its Galaxy job would count as in flight for the next run's refusals): stop it
    then (galaxy-verify.py withdraws its job)."""

    @staticmethod
    def operation_host_error(state, host, op_hash, retry_count=0, max_retries=0):
        if retry_count < max_retries or host.name not in GalaxyCheckAhead.started:
            return
        GalaxyCheckAhead.started.discard(host.name)
        try:
            host.run_shell_command(StringCommand(stop_check_ahead()), _timeout=120, **privilege_arguments(host))
        except Exception as error:  # noqa: BLE001 - a callback must not break pyinfra's run
            logger.warning(f"{host.print_prefix}could not stop the Galaxy job check started ahead: {error}")


@deploy("Galaxy job check, started ahead")
def start_galaxy_check_ahead(cluster: Cluster) -> None:
    """On a re-run, the Galaxy job check (a minute's worth of Galaxy and Slurm round trips) starts
    before the layers are checked and runs beside them; `verify_galaxy` keeps its result only when
    no operation on any host changed anything, so that it saw the cluster as the run leaves it.
    Otherwise it is stopped (its job withdrawn) and the check runs again at the end.

    Not when this run rewrites job_conf.xml: a runner switch or a removed handler would strand
    the check's own job (what the deploy refuses for jobs in flight, judged before this job
    exists); in the lab a DRMAA job left in flight across a switch to the CLI runner kept that
    runner from ever finishing the next job."""
    if not galaxy_check_wanted(cluster, say_why_not=False):
        return
    job_conf = hashlib.sha1(build_job_conf(cluster.galaxy)).hexdigest()  # the bytes config_file writes
    if host.get_fact(Sha1File, path=cluster.galaxy.job_conf) != job_conf:
        return
    galaxy_check_started(name="The Galaxy job check starts now, in the background (kept if nothing changes)",
                         command=galaxy_check_command(cluster.galaxy), galaxy=cluster.galaxy, group=SUPERVISOR_GROUP)


def stop_check_ahead() -> str:
    """Stop a check started ahead (galaxy-verify.py withdraws its job on SIGTERM), drop its report."""
    return f"systemctl stop {AHEAD_UNIT} 2>/dev/null; rm -f {AHEAD_REPORT}; true"


@operation(is_idempotent=True)
def galaxy_check_started(command: str, galaxy: Galaxy, group: str):
    """galaxy-verify.py started as a transient systemd unit, its report in a root-only file;
    only on a Galaxy that answers and has its accounts (not on a first install)."""
    yield from ()  # no command of pyinfra's: the check is not a change
    if not host.state.is_executing:
        return
    run(stop_check_ahead(), timeout=120)  # one a failed run left behind
    ready, _ = galaxy_ready(galaxy, group)
    installed = " && ".join(f"test -s {path}" for path in (GALAXY_ADMIN_KEY, GALAXY_VERIFY_KEY, GALAXY_VERIFY_SCRIPT))
    if not run(f"{installed} && {ready}")[0]:
        return
    job = f"exec {command} > {AHEAD_REPORT} 2>&1"
    ok, output = run(f"install -d -m 0700 {RUN_DIR} && systemd-run --quiet --collect --unit {AHEAD_UNIT} "
                     f"--property UMask=0077 /bin/sh -c {shlex.quote(job)}")
    if ok:
        GalaxyCheckAhead.started.add(host.name)
        if not GalaxyCheckAhead.watching:
            GalaxyCheckAhead.watching = True
            host.state.add_callback_handler(StopCheckAheadOnFailure())
    else:
        logger.warning(f"The Galaxy job check could not start ahead (it runs at the end): {output[-500:]}")


def galaxy_check_result(command: str) -> tuple[bool, dict, str]:
    """galaxy-verify.py's (exit status, report) and where they come from: the check started
    ahead when this run changed nothing and it passed; else a check run now (a failed ahead
    check is not trusted alone: it is confirmed by a fresh one)."""
    if host.name in GalaxyCheckAhead.started:
        GalaxyCheckAhead.started.discard(host.name)
        if changed_operations():
            run(stop_check_ahead(), timeout=120)
        else:
            wait_until(f"! systemctl is-active --quiet {AHEAD_UNIT}", GALAXY_CHECK_TIMEOUT)
            ok, result = galaxy_verify_report(*run(f"cat {AHEAD_REPORT} && rm -f {AHEAD_REPORT}"))
            if ok and result.get("ok"):
                return ok, result, "run beside this run's checks, which changed nothing"
    ok, result = run_galaxy_verify(command, timeout=GALAXY_CHECK_TIMEOUT)
    return ok, result, ""


@deploy("Verify Galaxy")
def verify_galaxy(cluster: Cluster) -> None:
    if not galaxy_check_wanted(cluster):
        return
    galaxy = cluster.galaxy
    galaxy_job_through_slurm(
        name="A Galaxy upload job runs through Slurm (or waits in Slurm on a full cluster)",
        command=galaxy_check_command(galaxy),
        compute_nodes=cluster.reachable_nodes,
        expected_user=galaxy.user,
        galaxy=galaxy,
        group=SUPERVISOR_GROUP,
        accounting=cluster.accounting is not None,
    )
