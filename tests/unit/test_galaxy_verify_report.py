"""The line an admin reads from the Galaxy verification's JSON report."""

from tasks.verify import galaxy_report_line

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
