"""The line an admin reads from the Galaxy verification's JSON report."""

from tasks.galaxy.keys import galaxy_verify_report
from tasks.verify.galaxy import galaxy_report_line

COMMON = {"galaxy_job_id": "1a2b", "runner": "slurm", "handler": "handler0", "slurm_job_id": "42",
          "slurm_job_name": "g7___DATA_FETCH___pgs_verify_example_org", "slurm_user": "galaxy",
          "user": "pgs-verify@example.org", "user_key": "kept key", "seconds": 20.1}


def test_completed_job():
    line = galaxy_report_line({**COMMON, "node": "c1", "slurm_state": "COMPLETED", "slurm_runtime": "00:00:07",
                               "seconds_to_ok": 9.5})
    assert line == ("Galaxy job 1a2b (runner slurm, handler handler0) = Slurm job 42 (g7___DATA_FETCH___pgs_verify_example_org) "
                    "on c1 as galaxy: COMPLETED, Slurm run time 00:00:07, upload to dataset ok in 9.5 s; "
                    "Galaxy user pgs-verify@example.org (kept key), verification 20.1 s")


def test_job_pending_on_a_full_cluster():
    line = galaxy_report_line({**COMMON, "busy": True, "pending_reason": "Resources", "pending_seconds": 15.2,
                               "slurm_removed_by": "Galaxy"})
    assert "= Slurm job 42 (g7___DATA_FETCH___pgs_verify_example_org) as galaxy: PENDING (Resources) for 15.2 s: " in line
    assert "the cluster is full, Galaxy reaches Slurm; Galaxy job deleted, Slurm job removed by Galaxy" in line


def test_the_report_is_the_last_line_of_the_output():
    output = 'waiting for Slurm job 12: PENDING (Priority) for 10 s of at most 15\n{"ok": true, "node": "c1"}\n'
    assert galaxy_verify_report(True, output) == (True, {"ok": True, "node": "c1"})


def test_output_without_a_report_is_a_failure_that_shows_the_output():
    ok, report = galaxy_verify_report(False, "Traceback (most recent call last):\n  ...\nConnectionError: refused\n")
    assert not ok and report["ok"] is False and report["error"].endswith("ConnectionError: refused\n")
    assert galaxy_verify_report(True, "")[1]["ok"] is False  # an empty report file (a check that was killed)
