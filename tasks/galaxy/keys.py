"""Galaxy's secrets and accounts: its id_secret and bootstrap admin API key (made once, kept on
the Galaxy host), and the admin's and the verification user's own API keys, made with the
bootstrap key on the first run by galaxy-verify.py (bioblend) and kept root-only."""

from __future__ import annotations

import json
import secrets
import shlex

from pyinfra import host, inventory
from pyinfra.api import operation
from pyinfra.facts.files import File
from pyinfra.operations import files

from tasks.checks import SHARE_DIR, report
from tasks.common import once, project_file
from tasks.galaxy.venv import DEPLOY_VENV
from tasks.model import Galaxy
from tasks.operations import fail, read_secret, run
from tasks.platform import PRIVATE_DIR

GALAXY_VERIFY_SCRIPT = f"{SHARE_DIR}/galaxy-verify.py"
# The verification user's API key, made once by galaxy-verify.py; root only.
GALAXY_VERIFY_KEY = f"{PRIVATE_DIR}/galaxy-verify-user.json"
# The Galaxy admin account's own API key (and first password), made once with the
# bootstrap key, which then leaves galaxy.yml; root only.
GALAXY_ADMIN_KEY = f"{PRIVATE_DIR}/galaxy-admin.json"


@once
def galaxy_secrets(galaxy: Galaxy) -> dict[str, str]:
    """Galaxy's id_secret and bootstrap admin API key: made on the first run, then
    read back from the Galaxy host (through a command's stdout, never printed)."""
    kept = read_secret(galaxy.secrets_file, inventory.get_host(galaxy.host.inventory_name))
    if kept:
        return json.loads(kept)
    return {"id_secret": secrets.token_hex(16), "admin_api_key": secrets.token_hex(32)}


def bootstrap_needed(galaxy: Galaxy) -> bool:
    """galaxy.yml gets bootstrap_admin_api_key only until the admin account has its own
    key (read at collection): on a first run, and when Galaxy moves to another database
    (the accounts are not in the new one). Galaxy's config schema: set it only to
    bootstrap, and not on a production server."""
    return galaxy.database.switching or host.get_fact(File, path=GALAXY_ADMIN_KEY) is None


def install_verification_tools() -> None:
    """galaxy-verify.py (its keys go to the deploy's private directory, made by tasks.hosts; bioblend is
    in the deploy's own venv: tasks.galaxy.python_venv_and_uv)."""
    files.put(name="Galaxy verification script", src=project_file("galaxy-verify.py"), dest=GALAXY_VERIFY_SCRIPT, mode="0755")


def verify_command(galaxy: Galaxy, *options: str) -> str:
    """galaxy-verify.py's command line (no secret on it: keys are read from root-only files)."""
    return (
        f"{DEPLOY_VENV}/bin/python {GALAXY_VERIFY_SCRIPT} --url {galaxy.url} --secrets {galaxy.secrets_file} "
        f"--admin-email {shlex.quote(galaxy.admin_email)} --admin-key-file {GALAXY_ADMIN_KEY} "
        f"--user-email {shlex.quote(galaxy.verify_email)} --key-file {GALAXY_VERIFY_KEY} {' '.join(options)}"
    ).rstrip()


def run_galaxy_verify(command: str, timeout: int) -> tuple[bool, dict]:
    """Run galaxy-verify.py (`verify_command`): its exit status and the JSON report it prints last
    ({"ok": False, "error": <its output's tail>} when there is none)."""
    return galaxy_verify_report(*run(command, timeout=timeout))


def galaxy_verify_report(ok: bool, output: str) -> tuple[bool, dict]:
    """galaxy-verify.py's output -> (ok, the JSON report it prints last, or {"ok": False, "error": tail})."""
    try:
        return ok, json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ok, {"ok": False, "error": output[-3000:]}


@operation(is_idempotent=True)
def galaxy_accounts(command: str):
    """The admin's own API key made with the bootstrap key, and the verification user's."""
    if not host.state.is_executing:
        return
    ok, result = run_galaxy_verify(command, timeout=300)
    if not ok or not result.get("ok"):
        yield fail(f"Galaxy's admin and verification accounts: {result.get('error', 'failed')}")
        return
    report(f"Galaxy admin {result['admin']} has its own API key ({GALAXY_ADMIN_KEY}); "
           f"verification user {result['user']} ({result['user_key']})")
