"""Bad input, faults and secrets: nothing half-broken, nothing lost, nothing leaked.

Runs after the other lab tests, on the deployed cluster. Each test leaves the
cluster converged (its last deploy passes with the normal inventory).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, ON_DEBIAN_12_ONLY, ON_DEBIAN_13_ONLY, PROJECT, RELEASE, TIMINGS, lab
from tests.lab.secret_watch import SecretWatch, findings, leaks_in_text, secret_forms

CONTROLLER = HOST_NAMES[0]
pytestmark = pytest.mark.lab


@ON_DEBIAN_13_ONLY  # the model's checks: release-independent
def test_bad_input_is_refused_before_any_host_is_touched(first_deploy, deploy):
    run = deploy("--data", 'slurm_partitions=[{"name": "gpu", "nodes": ["no-such-node"]}]',
                 "--data", "slurm_select_type_parameters=CR_Bogus")
    assert run.returncode == 1
    assert "the inventory has problems; no host was changed" in run.log
    assert "slurm_partitions[0] (gpu).nodes: no-such-node not a compute node" in run.log
    assert "slurm_select_type_parameters: 'CR_Bogus' is not valid" in run.log
    assert "Starting operation" not in run.log  # no operation ran on any host


@ON_DEBIAN_13_ONLY  # refused before any host is read: release-independent
def test_diff_is_refused_because_it_would_print_secrets(first_deploy, deploy):
    run = deploy("--diff")
    assert run.returncode == 1 and "--diff prints old and new contents" in run.log
    assert "Starting operation" not in run.log


def test_broken_slurm_setting_is_rolled_back(first_deploy, deploy, lab_host):
    controller = lab_host(CONTROLLER)
    before = controller.file("/etc/slurm/slurm.conf").sha256sum
    broken = deploy("--data", 'slurm_config_extra={"PriorityType": "priority/bogus"}')
    assert broken.returncode == 1
    assert "slurmctld did not come back after this run changed /etc/slurm/slurm.conf; restored the previous version" in broken.log
    assert "it runs again with the previous configuration" in broken.log
    assert controller.service("slurmctld").is_running
    for name in HOST_NAMES:  # the controller rolled back, the others never took the bad file
        assert lab_host(name).file("/etc/slurm/slurm.conf").sha256sum == before, name
    backups = controller.check_output("ls /etc/slurm/ | grep -c 'slurm.conf.*pgs-backup'")
    assert int(backups) >= 1
    fixed = deploy()
    assert fixed.returncode == 0 and fixed.changes == 0, fixed.changed_operations()


def _wait_for(check, timeout: float, step: float = 2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return check()


def _slurm_files(lab_host, name: str) -> tuple[str, str]:
    host = lab_host(name)
    return (host.check_output("sha256sum < /etc/slurm/slurm.conf"),
            host.check_output("sha256sum < /etc/slurm/cgroup.conf 2>/dev/null || echo absent"))


def _job_state(controller, job: str) -> tuple[str, str]:
    text = controller.check_output(f"scontrol show job {job}")
    return re.search(r"JobState=(\S+)", text).group(1), re.search(r"ExitCode=(\S+)", text).group(1)


def test_change_a_node_rejects_is_rolled_back_on_every_host(first_deploy, deploy, lab_host):
    """Cgroup plugins the lab's read-only cgroup v1 nodes cannot use: slurmctld takes them,
    every slurmd rejects them. Everything goes back, a running job survives."""
    controller = lab_host(CONTROLLER)
    before = {name: _slurm_files(lab_host, name) for name in HOST_NAMES}
    job = controller.check_output(f"sbatch --parsable -w {COMPUTE_NAMES[0]} --wrap 'sleep 45; echo done'")
    assert _wait_for(lambda: _job_state(controller, job)[0] == "RUNNING", 30), _job_state(controller, job)

    rejected = deploy("--data", "slurm_proctrack_type=proctrack/cgroup",
                      "--data", "slurm_task_plugin=task/cgroup,task/affinity")
    assert rejected.returncode == 1
    log = rejected.log
    assert f"the new Slurm configuration was rejected by {', '.join(sorted(COMPUTE_NAMES))}" in log, log[-4000:]
    assert "Couldn't load specified plugin name for proctrack/cgroup" in log  # the node's own slurmd log
    for name in HOST_NAMES:
        assert re.search(rf"{name}: restored /etc/slurm/slurm.conf.*restarted: slurm(ctld|d) active", log), name
    after = {name: _slurm_files(lab_host, name) for name in HOST_NAMES}
    assert after == before and len(set(after.values())) == 1  # one configuration, the one before the run
    assert controller.service("slurmctld").is_running
    for name in COMPUTE_NAMES:
        assert lab_host(name).service("slurmd").is_running, name
    states = dict(line.split() for line in controller.check_output("sinfo -h -N -o '%N %t'").splitlines())
    assert all(state in ("idle", "mix", "alloc") for state in states.values()), states

    assert _wait_for(lambda: _job_state(controller, job)[0] not in ("RUNNING", "PENDING", "COMPLETING"), 120)
    assert _job_state(controller, job) == ("COMPLETED", "0:0")
    normal = deploy()
    assert normal.returncode == 0 and normal.changes == 0, normal.changed_operations()


GALAXY_VENV = "/srv/galaxy/venv"


GALAXY_DATA_CANARY = "/srv/galaxy/data/pgs-lab-canary.txt"  # a file of the site's, beside Galaxy's own data
VENV_PYTHON_LINKS = "pyvenv.cfg bin/python bin/python3 bin/python3.*"


def _galaxy_files(host) -> dict[str, str]:
    """sha256 of Galaxy's config and secrets (config/), its datasets and the test's file in data/;
    not the venv, logs, the live database or the indexes Galaxy rebuilds when it starts."""
    out = host.check_output(
        "cd /srv/galaxy && find config data/datasets data/pgs-lab-canary.txt -type f -print0 | sort -z | xargs -0 -r sha256sum")
    return {line.split(None, 1)[1]: line.split()[0] for line in out.splitlines()}


@pytest.mark.skipif(RELEASE != "trixie", reason="simulates a Debian 12 venv (python3.11) on Debian 13")
def test_galaxy_venv_made_by_another_python_is_refused_then_rebuilt(first_deploy, deploy, lab_host):
    """What a Debian 12 -> 13 upgrade leaves: a venv whose python3 is 3.11, gone from the host."""
    head = lab_host(CONTROLLER)
    host_python = head.check_output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    head.check_output(f"head -c 64 /dev/urandom | base64 > {GALAXY_DATA_CANARY}")
    assert {"config/secrets.json", "config/galaxy.yml", "data/pgs-lab-canary.txt"} <= _galaxy_files(head).keys()
    # Kept to put the venv back if this test fails half-way: the tests after it need Galaxy.
    head.check_output(f"cd {GALAXY_VENV} && tar -cf /root/venv-python-links.tar {VENV_PYTHON_LINKS}")
    try:
        _venv_made_by_another_python(head, host_python, deploy)
    finally:
        if head.run(f"{GALAXY_VENV}/bin/python3 --version").rc != 0:
            head.check_output(f"tar -xf /root/venv-python-links.tar -C {GALAXY_VENV}")
        head.check_output(f"rm -rf /root/venv-python-links.tar {GALAXY_DATA_CANARY} {GALAXY_VENV}.*.pgs-backup")


def _venv_made_by_another_python(head, host_python: str, deploy) -> None:
    files_before = _galaxy_files(head)
    head.check_output(
        f"cd {GALAXY_VENV} && sed -i 's/^version *=.*/version = 3.11.2/; s#^executable *=.*#executable = /usr/bin/python3.11#' pyvenv.cfg"
        f" && for f in bin/python bin/python3 bin/python{host_python}; do if [ -L $f ]; then ln -sfn /usr/bin/python3.11 $f; fi; done")
    assert head.run(f"{GALAXY_VENV}/bin/python3 --version").rc != 0

    refused = deploy()
    assert refused.returncode == 1
    assert (f"galaxy_rebuild_venv: Galaxy's venv {GALAXY_VENV} on {CONTROLLER} was made by Python 3.11 "
            f"(/usr/bin/python3.11); its bin/python3 does not start, and the host's python3 is {host_python}") in refused.log
    assert "--data galaxy_rebuild_venv=true" in refused.log
    assert "Starting operation" not in refused.log  # refused before any change

    rebuilt = deploy("--data", "galaxy_rebuild_venv=true")
    assert rebuilt.returncode == 0, rebuilt.log[-5000:]
    assert re.search(r"Galaxy job \S+ .*upload to dataset ok", rebuilt.log), rebuilt.log[-3000:]
    assert head.check_output(f"{GALAXY_VENV}/bin/python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'") == host_python
    assert head.check_output(f"ls -d {GALAXY_VENV}.*.pgs-backup | wc -l") == "1"
    files_after = _galaxy_files(head)
    assert {path: files_after.get(path) for path in files_before} == files_before  # config, data, secrets kept

    again = deploy()
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()


@ON_DEBIAN_13_ONLY  # sinfo's states and scontrol's resume: the same in 22.05 and 24.11
def test_drained_node_is_named_and_resumed_on_request(first_deploy, deploy, lab_host):
    node = COMPUTE_NAMES[0]
    lab_host(CONTROLLER).check_output(f"scontrol update nodename={node} state=drain reason='fan failure'")
    stopped = deploy()
    assert stopped.returncode == 1
    assert f"nodes not healthy: {node}=drain" in stopped.log and "fan failure" in stopped.log
    assert "slurm_resume_nodes=true" in stopped.log
    still = deploy()  # not resumed silently
    assert still.returncode == 1
    resumed = deploy("--data", "slurm_resume_nodes=true")
    assert resumed.returncode == 0, resumed.log[-3000:]
    assert resumed.changes == 1 and "Resume DOWN or DRAINED nodes" in resumed.changed_operations()[0]


def test_unreachable_compute_host_then_convergence(first_deploy, deploy, lab_host):
    down = COMPUTE_NAMES[-1]
    lab("stop", down)
    try:
        partial = deploy()
        assert partial.returncode == 1
        assert re.search(rf"\[{down}\]\s+Could not connect", partial.log)
        assert f"host {down} is unreachable: its slurm.conf entry is kept as it is" in partial.log
        if len(COMPUTE_NAMES) > 1:
            assert f"not verified, unreachable this run: {down}" in partial.log
            assert "sbatch job" in partial.log  # the other hosts were deployed and verified
            assert partial.result["results"]["totals"]["error"] == 0  # no operation failed on the reachable hosts
        else:  # the only compute host is gone: the others are deployed, but no job can run
            assert f"no compute node was reachable this run (unreachable: {down})" in partial.log
    finally:
        lab("start", down)
    converged = deploy()
    assert converged.returncode == 0, converged.log[-3000:]
    srun_line = next(line for line in converged.log.splitlines() if "srun -N" in line)
    assert down in srun_line and "not verified" not in converged.log
    assert converged.changes == 0, converged.changed_operations()


def test_secrets_never_reach_output(first_deploy, deploy, lab_host):
    """No form of a secret in pyinfra's output (default, --json, -vvv --debug), nor in a
    file another user could read on any host during the fresh rollout, during the
    loud re-run, or left behind (/tmp, /var/tmp, the SSH user's home; see secret_watch)."""
    secrets = secret_forms(lab_host(CONTROLLER), lab_host(CONTROLLER))
    with SecretWatch.of_inventory(deploy.lab_inventory) as watch:
        loud = subprocess.run([str(os.path.join(os.path.dirname(sys.executable), "pyinfra")), "-y", "-vvv", "--debug",
                               "lab/inventory.py", "deploy.py"], cwd=PROJECT, env=deploy.env(), capture_output=True, text=True)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert {"munge key (hex)", "galaxy admin_api_key", "galaxy id_secret", "slurmdbd database password"} <= secrets.keys()
    everything = {"fresh rollout": first_deploy.log + json.dumps(first_deploy.result), "-vvv --debug re-run": loud.stdout + loud.stderr}
    problems = [f"the output of the {run_name}: {secret_name}"
                for run_name, text in everything.items() for secret_name in leaks_in_text(text, secrets)]
    assert all(len(text) > 1000 for text in everything.values())
    problems += findings(first_deploy.readable_files + watch.records, secrets)
    assert not problems, "secrets where others can read them:\n" + "\n".join(problems)


def test_the_deploying_machine_keeps_no_copy_of_the_munge_key(first_deploy, lab_host):
    """The key lives only in the run's memory: nothing under the checkout holds it."""
    key = base64.b64decode(lab_host(CONTROLLER).check_output("base64 -w0 /etc/munge/munge.key"))
    assert len(key) == 128
    skipped = {".git", ".venv", "__pycache__"}
    for path in PROJECT.rglob("*"):
        if path.is_file() and not skipped & set(path.relative_to(PROJECT).parts):
            assert key not in path.read_bytes(), f"{path} holds the cluster's munge key"


@ON_DEBIAN_12_ONLY  # munged's permission check: the same MUNGE on both releases; its modes through sudo
def test_munged_that_cannot_start_is_shown_with_its_own_reason(first_deploy, deploy, lab_host):
    """The deploy owns MUNGE's directories (here /etc/munge, made group-writable), not /etc: munged
    refuses to start under a group-writable /etc, and the run shows munged's own words for it."""
    name = COMPUTE_NAMES[-1]
    node = lab_host(name)
    node.check_output("chmod g+w /etc /etc/munge && head -c 128 /dev/urandom > /etc/munge/munge.key")
    try:
        refused = deploy("--data", "deploy_galaxy=false")
        assert refused.returncode == 1
        assert re.search(rf"\[{name}\]\s+munged: Error: Keyfile is insecure: group-writable permissions .* \"/etc\"", refused.log)
        assert node.file("/etc/munge").mode == 0o700  # what the deploy owns, it converged
    finally:
        node.check_output("chmod g-w /etc")
    fixed = deploy()
    assert fixed.returncode == 0, fixed.log[-3000:]
    assert node.service("munge").is_running
    credential = lab_host(CONTROLLER).check_output("munge -n")
    assert "Success (0)" in node.check_output(f"echo {credential} | unmunge")
    assert deploy().changes == 0


@ON_DEBIAN_12_ONLY  # release-independent (the deploy's check and a shell script): the sudo-user lab
def test_node_without_galaxys_shared_directory_is_named_and_drained_not_job_conf(first_deploy, deploy, lab_host):
    """A compute host whose /srv/galaxy is an empty filesystem (a reboot whose network mount failed):
    the run fails naming the node and what is missing, the node is drained by its own health check
    (pgs-node-health, slurm.conf's HealthCheckProgram) so no job lands there, job_conf.xml is neither
    blamed nor rolled back; once the directory is back the health check resumes the node."""
    node, controller = COMPUTE_NAMES[0], lab_host(CONTROLLER)
    job_conf = controller.file("/srv/galaxy/config/job_conf.xml").content_string
    assert "HealthCheckProgram=/usr/local/sbin/pgs-node-health" in controller.file("/etc/slurm/slurm.conf").content_string
    lab_host(node).check_output("mount -t tmpfs pgs-test-empty /srv/galaxy")
    try:
        run = deploy()
    finally:
        lab_host(node).check_output("umount /srv/galaxy")
    drained = controller.check_output(f"sinfo --noheader --Node --nodes={node} --format='%T|%E'")
    lab_host(node).check_output("/usr/local/sbin/pgs-node-health")  # what slurmd runs every HealthCheckInterval
    deadline = time.monotonic() + 60
    while (state := controller.check_output(f"sinfo --noheader --Node --nodes={node} --format='%T'")) != "idle":
        assert time.monotonic() < deadline, f"{node} still {state} after its directory came back"
        time.sleep(2)
    assert run.returncode != 0
    assert (f"node {node}: /srv/galaxy is not the Galaxy host's shared directory (/srv/galaxy/.pgs-shared, written "
            "there by this run, is not read here)") in run.log, run.log[-4000:]
    assert f"{node}=drain (pgs-health: /srv/galaxy is not the Galaxy host's shared directory" in run.log
    assert drained.startswith("drained|pgs-health: /srv/galaxy is not the Galaxy host's shared directory"), drained
    assert "Galaxy's job configuration failed its verification" not in run.log
    assert "the node health check (/usr/local/sbin/pgs-node-health) resumes a node it drained" in run.log
    # No host was left to write pyinfra's result (the single compute host drained): the log tells.
    assert not [line for line in run.log.splitlines() if "job_conf" in line and "roll" in line.lower()]
    assert controller.file("/srv/galaxy/config/job_conf.xml").content_string == job_conf


@ON_DEBIAN_13_ONLY  # slurmd's own RPC and ps: release-independent
def test_slurmd_that_runs_but_does_not_answer_is_named_within_seconds(first_deploy, deploy, lab_host):
    """A slurmd that is stopped (SIGSTOP: as hung as a process can be) still looks idle to slurmctld
    until SlurmdTimeout (300 s): the run names the node, the process state and systemd's view within
    seconds, and puts no test job there; the other node is verified."""
    stuck, other = COMPUTE_NAMES[-1], COMPUTE_NAMES[0]
    lab_host(stuck).check_output("pkill -STOP -x slurmd")
    try:
        run = deploy()
    finally:
        lab_host(stuck).check_output("pkill -CONT -x slurmd")
    assert run.returncode != 0
    named = re.search(rf"node {stuck}: slurmd does not answer within 10 s \(`scontrol show slurmd`\): "
                      r"pid \d+, state T\S* \(stopped \(SIGSTOP, or a debugger holds it\)\)", run.log)
    assert named, run.log[-4000:]
    assert f"no test job on {stuck} (failed above in this run)" in run.log
    assert f"srun -N1: ran on {other}" in run.log
    TIMINGS["run with a slurmd stopped (named, failed)"] = run.seconds
