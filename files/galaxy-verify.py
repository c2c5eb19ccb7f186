#!/usr/bin/env python3
"""Prove that a Galaxy job runs through Slurm (pyinfra-galaxy-slurm's verification).

Runs on the Galaxy host as root, with only the standard library. Reads the
bootstrap admin API key from Galaxy's secrets file (never from the command
line), makes sure the admin user exists, uploads pasted text into a new
history, waits for the dataset, reads it back, and looks the job up in Galaxy
(destination, runner, external id) and in Slurm (`scontrol show job`).
Prints one JSON report on stdout; exits 1 when the job did not run through
Slurm as expected (the report says why).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request


class Galaxy:
    def __init__(self, url: str, key: str):
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, payload: dict | None = None, key: str | None = None, raw: bool = False):
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            data=json.dumps(payload).encode() if payload is not None else None,
            method=method,
            headers={"x-api-key": key or self.key, "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return body.decode() if raw else json.loads(body)


def admin_key(galaxy: Galaxy, email: str) -> str:
    """An API key of the admin user (created on first use), from the bootstrap key."""
    users = galaxy.call("GET", f"users?f_email={email}")
    if users:
        user_id = users[0]["id"]
    else:
        user_id = galaxy.call("POST", "users", {
            "username": email.split("@")[0].lower().replace(".", "-") or "admin",
            "email": email,
            "password": secrets.token_urlsafe(24),
        })["id"]
    return galaxy.call("POST", f"users/{user_id}/api_key")


def scontrol_job(job_id: str) -> dict[str, str]:
    output = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in output.split() if "=" in field)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secrets", required=True)
    parser.add_argument("--admin-email", required=True)
    parser.add_argument("--expect-runner", default="slurm", help="destination runner the job must use ('local' to time the local runner)")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()

    with open(args.secrets) as handle:
        bootstrap = json.load(handle)["admin_api_key"]
    galaxy = Galaxy(args.url, bootstrap)
    galaxy.key = admin_key(galaxy, args.admin_email)
    report: dict = {"ok": False}

    history = galaxy.call("POST", "histories", {"name": f"pyinfra-galaxy-slurm verify {time.strftime('%Y-%m-%d %H:%M:%S')}"})
    content = f"pyinfra-galaxy-slurm {secrets.token_hex(8)}\n"
    submitted = time.monotonic()
    upload = galaxy.call("POST", "tools/fetch", {
        "history_id": history["id"],
        "targets": [{
            "destination": {"type": "hdas"},
            "elements": [{"src": "pasted", "paste_content": content, "ext": "txt", "name": "verify.txt"}],
        }],
    })
    job_id = upload["jobs"][0]["id"]
    dataset_id = upload["outputs"][0]["id"]
    report.update(galaxy_job_id=job_id, dataset_id=dataset_id)

    state = "new"
    while time.monotonic() - submitted < args.timeout:
        state = galaxy.call("GET", f"datasets/{dataset_id}")["state"]
        if state in ("ok", "error", "failed_metadata", "discarded", "deferred"):
            break
        time.sleep(0.5)
    report.update(dataset_state=state, seconds_to_ok=round(time.monotonic() - submitted, 1))

    job = galaxy.call("GET", f"jobs/{job_id}?full=true")
    destination = galaxy.call("GET", f"jobs/{job_id}/destination_params")
    report.update(
        job_state=job.get("state"),
        runner=destination.get("Runner"),
        handler=destination.get("Handler"),
        external_id=job.get("external_id"),
    )
    if state != "ok":
        report["error"] = f"dataset ended in state {state}: {job.get('stderr', '')[-2000:]}"
        print(json.dumps(report))
        return 1
    returned = galaxy.call("GET", f"datasets/{dataset_id}/display?preview=false", raw=True)
    report["content_matches"] = returned == content
    if str(report["runner"]).split(":")[0] != args.expect_runner:
        report["error"] = f"the job ran on runner {report['runner']}, not {args.expect_runner}"
        print(json.dumps(report))
        return 1
    if args.expect_runner == "slurm":
        slurm = scontrol_job(str(job.get("external_id")))
        report.update(slurm_job_id=slurm.get("JobId"), slurm_state=slurm.get("JobState"), node=slurm.get("NodeList"),
                      slurm_user=slurm.get("UserId", "").split("(")[0], slurm_runtime=slurm.get("RunTime"),
                      slurm_job_name=slurm.get("JobName"))
        report["ok"] = report["content_matches"] and report["slurm_state"] == "COMPLETED"
        if not report["ok"]:
            report["error"] = "the job did not complete through Slurm"
    else:
        report["ok"] = report["content_matches"]
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except urllib.error.HTTPError as error:
        print(json.dumps({"ok": False, "error": f"Galaxy API {error.code} on {error.url}: {error.read().decode()[:500]}"}))
        sys.exit(1)
