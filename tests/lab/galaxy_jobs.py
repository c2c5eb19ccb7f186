"""Galaxy jobs a lab test holds in flight: submit, see them run in Slurm, release, check they ended ok.

The jobs are the `pgs_wait_for_release` tool's (tests/lab/data/wait_for_release.xml):
each runs until its release file appears on the shared Galaxy root (or fails
after 900 s). `install()` puts the tool and its bioblend driver
(data/galaxy_test_jobs.py, run on the Galaxy host in the deploy's venv) on the
Galaxy host; `deploy_args()` are the --data a deploy needs to keep the tool
loaded. Use:

    jobs = GalaxyJobs(lab_inventory)
    jobs.install(); deploy(*jobs.deploy_args())
    held = jobs.submit(2)
    jobs.wait_running(held)      # Galaxy "running", each with a RUNNING Slurm job
    ...                          # the change under test
    jobs.release(held)
    final = jobs.wait_finished(held)   # {job_id: {...}}; assert every dataset_state == "ok"

Every wait is bounded and fails with the last states seen.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
REMOTE_DIR = "/usr/local/share/pyinfra-galaxy-slurm/lab-test"
VENV_PYTHON = "/usr/local/share/pyinfra-galaxy-slurm/venv/bin/python"
DATASET_DONE = ("ok", "error", "failed_metadata", "discarded", "deferred", "paused")
# psql on Galaxy's PostgreSQL database as the galaxy user (peer authentication); append the quoted query.
PSQL_AS_GALAXY = "runuser -u galaxy -- psql -At -d galaxy -h /var/run/postgresql -c "


class GalaxyJobs:
    def __init__(self, lab_inventory: Path, galaxy_host: str | None = None, root: str = "/srv/galaxy"):
        lab = json.loads(Path(lab_inventory).read_text())
        host = next(h for h in lab["hosts"] if (h["name"] == galaxy_host if galaxy_host else "galaxy" in h["groups"]))
        self.address = host["address"]
        self.ssh_options = ["-F", lab["ssh_config"], "-i", lab["ssh_key"], "-o", "BatchMode=yes"]
        self.sudo = lab.get("ssh_user", "root") != "root"  # a lab reached only through a sudo user
        self.root = root
        self.tool_dir = f"{root}/config/lab-test-tools"
        self.release_dir = f"{root}/lab-test-release"
        self.tool_conf = f"{self.tool_dir}/tool_conf.xml"
        self.extra: dict = {}

    def ssh(self, command: str, timeout: int = 120, stdin: bytes | None = None) -> str:
        remote = f"sudo -n sh -c {shlex.quote(command)}" if self.sudo else command
        done = subprocess.run(["ssh", *self.ssh_options, self.address, remote], input=stdin, capture_output=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{command} on {self.address}: {done.stderr.decode()[-2000:]}"
        return done.stdout.decode()

    def put(self, local: Path, remote: str) -> None:
        self.ssh(f"cat > {shlex.quote(remote)}", stdin=local.read_bytes())

    def install(self) -> None:
        """The tool (in its own tool_conf.xml beside Galaxy's default one) and the driver."""
        self.ssh(f"install -d -m 0755 {REMOTE_DIR} {self.tool_dir} {self.release_dir}")
        self.put(DATA / "wait_for_release.xml", f"{self.tool_dir}/wait_for_release.xml")
        self.put(DATA / "galaxy_test_jobs.py", f"{REMOTE_DIR}/galaxy_test_jobs.py")
        tool_conf = (f'<toolbox>\n  <section id="pgs_lab_test" name="pyinfra-galaxy-slurm lab tests">\n'
                     f'    <tool file="{self.tool_dir}/wait_for_release.xml"/>\n  </section>\n</toolbox>\n')
        self.ssh(f"printf %s {shlex.quote(tool_conf)} > {self.tool_conf} && chmod -R a+rX {self.tool_dir}")
        default = self.ssh(f"ls {self.root}/venv/lib/python3*/site-packages/galaxy/config/sample/tool_conf.xml.sample").strip()
        self.extra = {"tool_config_file": f"{default},{self.tool_conf}"}

    def deploy_args(self, **settings) -> list[str]:
        """--data arguments: the tool stays loaded; more settings as name=value (values JSON-encoded)."""
        args = ["--data", f"galaxy_config_extra={json.dumps(self.extra)}"]
        for name, value in settings.items():
            args += ["--data", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
        return args

    def driver(self, *args: str) -> object:
        return json.loads(self.ssh(f"{VENV_PYTHON} {REMOTE_DIR}/galaxy_test_jobs.py {shlex.join(args)}").strip().splitlines()[-1])

    def submit(self, count: int = 2) -> list[dict]:
        """`count` jobs, each with its own release file: [{"job_id", "dataset_id", "release"}]."""
        releases = [f"{self.release_dir}/{uuid.uuid4().hex}" for _ in range(count)]
        return self.driver("submit", *releases)

    def status(self, jobs: list[dict]) -> dict[str, dict]:
        """{job_id: {"state", "dataset_state", "external_id", "slurm_state", "node"}}"""
        return self.driver("status", *(job["job_id"] for job in jobs))

    def wait(self, jobs: list[dict], done, what: str, timeout: float) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        states: dict[str, dict] = {}
        while time.monotonic() < deadline:
            states = self.status(jobs)
            if all(done(state) for state in states.values()):
                return states
            time.sleep(3)
        raise AssertionError(f"Galaxy jobs not {what} within {timeout} s: {json.dumps(states, indent=1)}")

    def wait_running(self, jobs: list[dict], timeout: float = 240) -> dict[str, dict]:
        """Every job running in Galaxy, with a RUNNING Slurm job behind it."""
        return self.wait(jobs, lambda s: s["state"] == "running" and s["external_id"] and s["slurm_state"] == "RUNNING",
                         "running in Slurm", timeout)

    def release(self, jobs: list[dict]) -> None:
        self.ssh("touch " + " ".join(shlex.quote(job["release"]) for job in jobs))

    def wait_finished(self, jobs: list[dict], timeout: float = 300) -> dict[str, dict]:
        """Every job's dataset in a final state (the caller asserts which)."""
        return self.wait(jobs, lambda s: s["dataset_state"] in DATASET_DONE, "finished", timeout)

    def handler_of(self, slurm_job: str) -> str:
        """The job handler (handler0, handler1...) that owns the Galaxy job behind Slurm job `slurm_job`."""
        query = f"SELECT handler FROM job WHERE job_runner_external_id = '{int(slurm_job)}'"
        return self.ssh(PSQL_AS_GALAXY + shlex.quote(query)).strip()

    def handler_pid(self, handler: str = "handler0") -> str:
        return self.ssh(f"supervisorctl pid gx:{handler}").strip()

    def handler_starts(self, handler: str = "handler0") -> int:
        """How many times the handler began loading its runners (its log survives restarts)."""
        return int(self.ssh(f"grep -c 'will load all configured runner plugins' {self.root}/log/{handler}.log || true").strip() or 0)

    def handler_ready(self, handler: str = "handler0") -> bool:
        """The handler RUNNING under supervisor and its runners loaded since its last start."""
        return self.ssh(
            f"supervisorctl status gx:{handler} | grep -q RUNNING && awk '/will load all configured runner plugins/ {{n = 0}} "
            f"/Loaded job runner/ {{n++}} END {{print (n > 0)}}' {self.root}/log/{handler}.log || echo 0"
        ).strip() == "1"
