#!/usr/bin/env python3
"""Galaxy jobs for the lab tests, run on the Galaxy host with the deploy's bioblend venv.

    galaxy_test_jobs.py submit RELEASE_FILE...  -> JSON [{"job_id", "dataset_id", "release"}]
    galaxy_test_jobs.py status JOB_ID...        -> JSON {job_id: {"state", "dataset_state", "external_id", "slurm_state"}}

Jobs are the wait_for_release tool's, run by the Galaxy user pgs-lab-test@example.org
(made once the way the deploy's verification makes its own user) in its history
"pyinfra-galaxy-slurm lab test jobs".
"""

from __future__ import annotations

import importlib.util
import json
import sys

URL = "http://127.0.0.1"  # through nginx (galaxy_http_port 80)
ADMIN_KEY_FILE = "/etc/pyinfra-galaxy-slurm/galaxy-admin.json"  # the admin's own key (no bootstrap key after the first run)
VERIFY = "/usr/local/share/pyinfra-galaxy-slurm/galaxy-verify.py"
EMAIL = "pgs-lab-test@example.org"
KEY_FILE = "/etc/pyinfra-galaxy-slurm/lab-test-user.json"
HISTORY = "pyinfra-galaxy-slurm lab test jobs"
TOOL = "pgs_wait_for_release"


def verify_module():
    spec = importlib.util.spec_from_file_location("galaxy_verify", VERIFY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(command: str, args: list[str]) -> object:
    verify = verify_module()
    admin = verify.connect(URL, verify.read_json(ADMIN_KEY_FILE)["api_key"])
    galaxy, _ = verify.verification_user(URL, admin, EMAIL, KEY_FILE)
    if command == "submit":
        histories = galaxy.histories.get_histories(name=HISTORY)
        history_id = histories[0]["id"] if histories else galaxy.histories.create_history(HISTORY)["id"]
        submitted = []
        for release in args:
            run = galaxy.tools.run_tool(history_id, TOOL, {"release": release})
            submitted.append({"job_id": run["jobs"][0]["id"], "dataset_id": run["outputs"][0]["id"], "release": release})
        return submitted
    states = {}
    for job_id in args:
        job = admin.jobs.show_job(job_id, full_details=True)
        dataset = galaxy.datasets.show_dataset(job["outputs"]["output"]["id"])
        external_id = job.get("external_id")
        slurm = verify.scontrol_job(external_id) if external_id else {}
        states[job_id] = {"state": job["state"], "dataset_state": dataset["state"], "external_id": external_id,
                          "slurm_state": slurm.get("JobState"), "node": slurm.get("NodeList")}
    return states


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
