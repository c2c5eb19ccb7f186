#!/usr/bin/env python3
"""Prove that a Galaxy job runs through Slurm (pyinfra-galaxy-slurm's verification).

Runs as root on the Galaxy host, in the deploy's own venv with bioblend. The job
is submitted by a Galaxy user of its own (--user-email, an ordinary user, not an
admin), its API key made once and kept in --key-file (mode 0600), reused on
later runs. Admin reads use the admin account's own key (--admin-key-file, 0600).

`--bootstrap` (the deploy's first run only, while galaxy.yml holds
bootstrap_admin_api_key): the bootstrap key (read from Galaxy's secrets file,
never from the command line nor printed) creates the admin account
(--admin-email, in galaxy.yml's admin_users; a random password kept beside its
key for the admin's first login) and its API key; the deploy then removes the
bootstrap key from galaxy.yml (Galaxy's config schema: set it only to
bootstrap, not on a production server). No other user's key is ever replaced.

One history named HISTORY_NAME is reused; datasets a run leaves in it are
purged. The run uploads a small text file (tus + the fetch API, tool
__DATA_FETCH__), waits for the dataset, reads it back, and looks the job up in
Galaxy and in Slurm (`scontrol show job`). Galaxy hides a job's external id
(the Slurm job id), runner and handler from its owner: those two reads use the
bootstrap admin key, read-only.

On a full cluster the job waits in Slurm: once its Slurm job has been PENDING
for --pending-wait seconds with reason Resources or Priority, that is the proof
(Galaxy -> Slurm); the Galaxy job is deleted, its Slurm job made sure gone
(scancel when Galaxy did not cancel it) and its dataset purged.

Prints one JSON report on stdout (progress on stderr); exits 1 when the job did
not run through Slurm as expected (the report says why).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time

from bioblend import ConnectionError as GalaxyError
from bioblend.galaxy import GalaxyInstance

HISTORY_NAME = "pyinfra-galaxy-slurm verification (its own; old datasets purged each run)"
DATASET_DONE = ("ok", "error", "failed_metadata", "discarded", "deferred", "paused")
# Pending reasons of a job that waits for CPUs other jobs hold: a busy cluster, not a broken one.
BUSY_REASONS = ("Resources", "Priority")
SLURM_GONE_TIMEOUT = 30
# What the report says of each destination's job.
DESTINATION_REPORT = ("ok", "error", "slurm_job_id", "slurm_state", "node", "partition", "time_limit", "seconds_to_ok",
                      "busy", "pending_reason", "galaxy_slots", "galaxy_memory_mb", "slurm_allocation")
# Memory units of scontrol's TRES (mem=11449M, mem=2G), in MB.
TRES_MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# What Galaxy's destination_params API adds to a job's destination params.
DESTINATION_FIELDS = ("Runner", "Runner Job ID", "Handler")
POLL = 0.5  # seconds between looks at the job (the upload takes ~10 s)
# Set by SIGTERM (the deploy stops a check it started ahead when its run changed something):
# the job being followed is withdrawn, the report says so, no further job starts.
STOPPING: list[int] = []


def stop_asked(signum: int, frame) -> None:
    STOPPING.append(signum)


def connect(url: str, key: str) -> GalaxyInstance:
    """A session as the owner of `key` (Galaxy through nginx, plain HTTP on loopback)."""
    return GalaxyInstance(url, key=key)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def write_private_json(path: str, data: dict) -> None:
    """Write `data` to `path`, mode 0600 from its creation, replacing it atomically."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def verification_user(url: str, admin: GalaxyInstance, email: str, key_file: str) -> tuple[GalaxyInstance, str]:
    """The verification user's Galaxy session and how it was had: "kept key", or
    "new key" (the user is created first if it does not exist)."""
    stored = read_json(key_file)
    if stored and stored.get("email") == email:
        galaxy = connect(url, stored["api_key"])
        try:
            if galaxy.users.get_current_user().get("email") == email:
                return galaxy, "kept key"
        except GalaxyError as error:
            progress(f"the kept API key of {email} is refused ({error.status_code}): making a new one")
    users = admin.users.get_users(f_email=email)
    if users:
        user = users[0]
    else:
        username = re.sub(r"[^a-z0-9._-]", "-", email.split("@")[0].lower()) or "pgs-verify"
        user = admin.users.create_local_user(username, email, secrets.token_urlsafe(24))
        progress(f"created Galaxy user {email}")
    key = admin.users.create_user_apikey(user["id"])
    write_private_json(key_file, {"email": email, "user_id": user["id"], "api_key": key})
    return connect(url, key), "new key"


def admin_session(url: str, email: str, key_file: str, bootstrap_key: str | None) -> GalaxyInstance:
    """The admin account's session, with its kept key; with `bootstrap_key`, the account
    (if missing) and its key are made first. Without one, a refused key is an error."""
    stored = read_json(key_file)
    if stored and stored.get("email") == email:
        galaxy = connect(url, stored["api_key"])
        try:
            if galaxy.users.get_current_user().get("email") == email:
                return galaxy
        except GalaxyError as error:
            progress(f"the kept API key of the admin {email} is refused ({error.status_code})")
    if not bootstrap_key:
        raise SystemExit(json.dumps({"ok": False, "error": (
            f"no working API key of the admin {email} in {key_file}, and galaxy.yml holds no bootstrap key to make one: "
            f"remove {key_file} and re-run the deploy (it bootstraps the admin's key once)")}))
    bootstrap = connect(url, bootstrap_key)
    users = bootstrap.users.get_users(f_email=email)
    password = None
    if users:
        user = users[0]
    else:
        password = secrets.token_urlsafe(18)
        username = re.sub(r"[^a-z0-9._-]", "-", email.split("@")[0].lower()) or "admin"
        user = bootstrap.users.create_local_user(username, email, password)
        progress(f"created the Galaxy admin {email}")
    key = bootstrap.users.create_user_apikey(user["id"])
    kept = {"email": email, "user_id": user["id"], "api_key": key}
    if password:
        kept["password"] = password  # for the admin's first login; change it in Galaxy
    elif stored and stored.get("email") == email and stored.get("password"):
        kept["password"] = stored["password"]
    write_private_json(key_file, kept)
    return connect(url, key)


def verification_history(galaxy: GalaxyInstance) -> tuple[str, int]:
    """The verification's own history (made once) and how many old datasets were purged from it."""
    histories = galaxy.histories.get_histories(name=HISTORY_NAME)
    for extra in histories[1:]:
        galaxy.histories.delete_history(extra["id"], purge=True)
    history_id = histories[0]["id"] if histories else galaxy.histories.create_history(HISTORY_NAME)["id"]
    purged = 0
    for item in galaxy.histories.show_history(history_id, contents=True, deleted=None):
        if item.get("history_content_type") == "dataset" and not item.get("purged"):
            galaxy.histories.delete_dataset(history_id, item["id"], purge=True)
            purged += 1
    return history_id, purged


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` fields; {} when Slurm no longer knows the job."""
    output = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in output.split() if "=" in field)


def slurm_allocation(slurm: dict[str, str]) -> tuple[str, int | None, int | None]:
    """(the TRES Slurm gave a job, its CPUs, its memory in MB or None when memory is not scheduled).
    Slurm 24.11 calls the field AllocTRES, 22.05 TRES (scontrol show job)."""
    tres = slurm.get("AllocTRES") or slurm.get("TRES") or ""
    fields = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
    cpus = int(fields["cpu"]) if fields.get("cpu", "").isdigit() else None
    memory = re.fullmatch(r"([\d.]+)([KMGT])", fields.get("mem", ""))
    return tres, cpus, round(float(memory[1]) * TRES_MEMORY_UNITS[memory[2]]) if memory else None


def tool_output_problem(returned: bytes, slurm: dict[str, str]) -> tuple[str | None, dict]:
    """The verification tool's line (node=... galaxy_slots=... galaxy_memory_mb=...) against the
    job's Slurm allocation: what Galaxy told the tool (GALAXY_SLOTS, GALAXY_MEMORY_MB, from its job
    script) must be what Slurm gave the job; GALAXY_MEMORY_MB unset when memory is not scheduled."""
    fields = dict(item.split("=", 1) for item in returned.decode().split() if "=" in item)
    if "node" not in fields:
        return f"the tool's output is not the node's line: {returned[:200]!r}", {}
    tres, cpus, memory_mb = slurm_allocation(slurm)
    seen = {"galaxy_slots": fields.get("galaxy_slots"), "galaxy_memory_mb": fields.get("galaxy_memory_mb"),
            "slurm_allocation": tres}
    expected = {"galaxy_slots": str(cpus), "galaxy_memory_mb": str(memory_mb) if memory_mb else "unset"}
    wrong = [f"{key.upper()}={seen[key]} (Slurm gave {expected[key]})" for key in expected if seen[key] != expected[key]]
    if wrong:
        return (f"the tool saw {', '.join(wrong)}: Galaxy's job script does not tell its tools what Slurm allocated "
                f"({tres})"), seen
    return None, seen


def slurm_gone(job_id: str) -> bool:
    return scontrol_job(job_id).get("JobState", "") in ("", "CANCELLED", "COMPLETED", "FAILED", "TIMEOUT")


def job_placement(admin: GalaxyInstance, job_id: str) -> dict:
    """Where Galaxy sent the job (admin-only reads): external id, runner, handler."""
    job = admin.jobs.show_job(job_id, full_details=True)
    placement = {"job_state": job.get("state"), "external_id": job.get("external_id")}
    if job.get("external_id"):
        destination = admin.jobs.get_destination_params(job_id)
        placement.update(runner=destination.get("Runner"), handler=destination.get("Handler"),
                         destination_params={k: v for k, v in destination.items() if k not in DESTINATION_FIELDS})
    return placement


def withdraw(galaxy: GalaxyInstance, history_id: str, job_id: str, dataset_id: str, slurm_job_id: str | None) -> str:
    """Delete the Galaxy job, make sure its Slurm job (if any) is gone, purge its dataset;
    who removed the Slurm job ("Galaxy", "scancel", or "-" without one)."""
    galaxy.jobs.cancel_job(job_id)
    removed_by = "-"
    if slurm_job_id:
        deadline = time.monotonic() + SLURM_GONE_TIMEOUT
        while time.monotonic() < deadline and not slurm_gone(slurm_job_id):
            time.sleep(1)
        removed_by = "Galaxy"
        if not slurm_gone(slurm_job_id):
            subprocess.run(["scancel", slurm_job_id], check=True)
            removed_by = "scancel"
    galaxy.histories.delete_dataset(history_id, dataset_id, purge=True)
    return removed_by


def follow(galaxy: GalaxyInstance, admin: GalaxyInstance, args, history_id: str, job_id: str, dataset_id: str,
           submitted: float, expected_params: dict, destination: str, output_problem) -> dict:
    """Wait for a Galaxy job and judge it: ok through Slurm with its destination's params and an
    output `output_problem(returned, slurm job)` finds nothing wrong with (it returns the problem
    or None, and fields for the report; the dataset is then purged), or PENDING in Slurm for
    capacity (withdrawn: a busy cluster), or why not ("error")."""
    state, placement, pending_since, slurm, polls = "new", {}, None, {}, 0
    while time.monotonic() - submitted < args.timeout and not STOPPING:
        state = galaxy.datasets.show_dataset(dataset_id)["state"]
        if state in DATASET_DONE:
            break
        if not placement.get("external_id"):
            placement = job_placement(admin, job_id)
        if placement.get("external_id") and args.expect_runner == "slurm":
            slurm = scontrol_job(placement["external_id"])
            if slurm.get("JobState") != "PENDING":
                pending_since = None
            else:
                pending_since = pending_since or time.monotonic()
                waited = time.monotonic() - pending_since
                if waited >= args.pending_wait:
                    break
                if not polls % 20:
                    progress(f"waiting for Slurm job {placement['external_id']}: PENDING ({slurm.get('Reason')}) "
                             f"for {waited:.0f} s of at most {args.pending_wait}")
        polls += 1
        time.sleep(POLL)
    placement = job_placement(admin, job_id)
    report: dict = {"ok": False, "destination": destination}
    report.update(placement, dataset_state=state, seconds_to_ok=round(time.monotonic() - submitted, 1))

    if pending_since is not None and state not in DATASET_DONE:
        # Busy cluster: the job reached Slurm and waits there; that proves Galaxy -> Slurm.
        slurm_job_id = placement["external_id"]
        report.update(busy=True, slurm_job_id=slurm_job_id, slurm_state=slurm.get("JobState"),
                      pending_reason=slurm.get("Reason"), pending_seconds=round(time.monotonic() - pending_since, 1),
                      slurm_job_name=slurm.get("JobName"), slurm_user=slurm.get("UserId", "").split("(")[0])
        report["slurm_removed_by"] = withdraw(galaxy, history_id, job_id, dataset_id, slurm_job_id)
        report["ok"] = report["pending_reason"] in BUSY_REASONS
        if not report["ok"]:
            report["error"] = (f"Slurm job {slurm_job_id} stayed PENDING for {report['pending_seconds']} s with reason "
                               f"{report['pending_reason']} (not a busy cluster: see `scontrol show job`)")
    elif state not in DATASET_DONE:
        # Out of time or stopped (and not a busy cluster): say where it stands, and leave nothing behind.
        waited = "when stopped" if STOPPING else f"after {args.timeout} s"
        report["error"] = (f"dataset still {state} {waited}: Galaxy job {report.get('job_state')}, "
                           f"Slurm job {report.get('external_id') or 'none yet'} {slurm.get('JobState', '')} {slurm.get('Reason', '')}")
        report["slurm_removed_by"] = withdraw(galaxy, history_id, job_id, dataset_id, report.get("external_id"))
    elif state != "ok":
        job = galaxy.jobs.show_job(job_id, full_details=True)
        said = job.get("stderr") or galaxy.datasets.show_dataset(dataset_id).get("misc_info") or ""
        report["error"] = f"dataset ended in state {state} after {report['seconds_to_ok']} s: {said[-2000:]}"
    elif str(report.get("runner")).split(":")[0] != args.expect_runner:
        report["error"] = f"the job ran on runner {report.get('runner')}, not {args.expect_runner}"
    elif any(report.get("destination_params", {}).get(key) != value for key, value in expected_params.items()):
        report["error"] = (f"the job ran with destination params {report.get('destination_params')}, not those of "
                           f"destination {destination} ({expected_params})")
    else:
        returned = galaxy.datasets.download_dataset(dataset_id, use_default_filename=False, require_ok_state=True)
        slurm = scontrol_job(str(report["external_id"])) if args.expect_runner == "slurm" else {}
        if slurm:
            report.update(slurm_job_id=slurm.get("JobId"), slurm_state=slurm.get("JobState"), node=slurm.get("NodeList"),
                          slurm_user=slurm.get("UserId", "").split("(")[0], slurm_runtime=slurm.get("RunTime"),
                          slurm_job_name=slurm.get("JobName"), partition=slurm.get("Partition"),
                          time_limit=slurm.get("TimeLimit"))
        problem, seen = output_problem(returned, slurm)
        report.update(seen, content_matches=problem is None)
        report["ok"] = problem is None and report.get("slurm_state", "COMPLETED") == "COMPLETED"
        if not report["ok"]:
            report["error"] = problem or "the job did not complete through Slurm"
        galaxy.histories.delete_dataset(history_id, dataset_id, purge=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secrets", required=True, help="Galaxy's secrets.json (admin_api_key: the bootstrap admin key)")
    parser.add_argument("--admin-email", required=True, help="the admin account (galaxy.yml admin_users)")
    parser.add_argument("--admin-key-file", required=True, help="where the admin's API key is kept (mode 0600)")
    parser.add_argument("--bootstrap", action="store_true", help="galaxy.yml holds the bootstrap key: make the admin's key")
    parser.add_argument("--accounts-only", action="store_true", help="make sure of the admin's and the user's keys, run no job")
    parser.add_argument("--user-email", required=True, help="the verification's own Galaxy user")
    parser.add_argument("--key-file", required=True, help="where that user's API key is kept (mode 0600)")
    parser.add_argument("--expect-runner", default="slurm", help="destination runner the job must use ('local' to time the local runner)")
    parser.add_argument("--destination", default="", help="the destination id Galaxy sends the upload to (named in the report)")
    parser.add_argument("--destination-params", default="{}",
                        help="JSON: params of that destination in job_conf.xml the job must carry (its Slurm options)")
    parser.add_argument("--tool-destinations", default="[]",
                        help="JSON: [[destination id, tool id, params]]: a job of that tool through each further destination")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for the dataset to be ok")
    parser.add_argument("--pending-wait", type=int, default=15,
                        help="seconds a job may stay PENDING in Slurm (busy cluster) before it counts as proof and is withdrawn")
    args = parser.parse_args()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, stop_asked)

    bootstrap = (read_json(args.secrets) or {})["admin_api_key"] if args.bootstrap else None
    admin = admin_session(args.url, args.admin_email, args.admin_key_file, bootstrap)
    galaxy, key_source = verification_user(args.url, admin, args.user_email, args.key_file)
    if args.accounts_only:
        print(json.dumps({"ok": True, "admin": args.admin_email, "user": args.user_email, "user_key": key_source}))
        return 0
    history_id, purged = verification_history(galaxy)
    report: dict = {"ok": False, "user": args.user_email, "user_key": key_source, "old_datasets_purged": purged,
                    "destination": args.destination}
    expected_params = json.loads(args.destination_params)

    content = f"pyinfra-galaxy-slurm {secrets.token_hex(8)}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as upload_file:
        upload_file.write(content)
        upload_file.flush()
        submitted = time.monotonic()
        upload = galaxy.tools.upload_file(upload_file.name, history_id, file_type="txt", file_name="verify.txt")
    job_id = upload["jobs"][0]["id"]
    dataset_id = upload["outputs"][0]["id"]
    report.update(galaxy_job_id=job_id, dataset_id=dataset_id)

    report.update(follow(galaxy, admin, args, history_id, job_id, dataset_id, submitted, expected_params,
                         args.destination,
                         lambda returned, slurm: (None if returned.decode() == content
                                                  else "the dataset's content differs from the upload", {})))
    destinations = [{"destination": args.destination, **{k: report.get(k) for k in DESTINATION_REPORT}}]
    for destination_id, tool_id, params in json.loads(args.tool_destinations):
        if STOPPING:
            break
        submitted = time.monotonic()
        ran = galaxy.tools.run_tool(history_id, tool_id, {})
        job_id, dataset_id = ran["jobs"][0]["id"], ran["outputs"][0]["id"]
        outcome = follow(galaxy, admin, args, history_id, job_id, dataset_id, submitted, params, destination_id,
                         tool_output_problem)
        destinations.append({"destination": destination_id, "tool": tool_id, "galaxy_job_id": job_id,
                             **{k: outcome.get(k) for k in DESTINATION_REPORT}})
        if not outcome["ok"] and report["ok"]:
            report.update(ok=False, error=f"destination {destination_id}: {outcome.get('error')}")
    report["destinations"] = destinations
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GalaxyError as error:
        print(json.dumps({"ok": False, "error": f"Galaxy API {error.status_code}: {error}"[:800]}))
        sys.exit(1)
