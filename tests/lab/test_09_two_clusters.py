"""Two clusters deployed at the same time from one checkout keep their own munge keys.

An admin with one checkout runs the deploy for two clusters with the same
ClusterName (the default, galaxy), in the same environment,
both at once. Each cluster must keep its controller's key on all its hosts, and
a re-run must change nothing and restart no munged, however the runs interleave.

The two labs are this test's own (1 head + 1 compute each, Slurm layers only:
deploy_galaxy=false), named and placed by TEST_TWO_CLUSTERS_NAMES and
TEST_TWO_CLUSTERS_SUBNETS (comma-separated pairs; defaults pgs2a,pgs2b on
10.213.6.0/24,10.213.7.0/24, clear of the demo, test and bench labs). They are
torn down at the end unless KEEP_LAB=1.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from lab import settings
from tests.lab.conftest import KEEP_LAB, ON_DEBIAN_13_ONLY, Deployer, DeployRun, LabHosts

pytestmark = [pytest.mark.lab, ON_DEBIAN_13_ONLY]

NAMES = settings.TEST_TWO_CLUSTERS_NAMES.items()
SUBNETS = settings.TEST_TWO_CLUSTERS_SUBNETS.items()
SLURM_ONLY = ("--data", "deploy_galaxy=false")
RERUN_ROUNDS = 3
MUNGE_KEY = "/etc/munge/munge.key"
JOB_TIMEOUT = 60  # seconds for a two-node srun


@dataclass
class Cluster:
    hosts: LabHosts
    deploy: Deployer

    @property
    def name(self) -> str:
        return self.hosts.name

    def munge(self) -> dict[str, tuple[str, str]]:
        """Each host's (munge key sha256, munged's MainPID and start time)."""
        state = {}
        for name in self.hosts.host_names:
            host = self.hosts.host(name)
            since = host.check_output("systemctl show -p MainPID -p ActiveEnterTimestamp munge | sort | paste -sd' '")
            state[name] = (host.file(MUNGE_KEY).sha256sum, since)
        return state


@pytest.fixture(scope="module")
def clusters():
    if os.geteuid() != 0:
        pytest.fail("the lab tests boot containers and need root")
    assert len(NAMES) == len(SUBNETS) == 2, "TEST_TWO_CLUSTERS_NAMES and _SUBNETS: two comma-separated values each"
    labs = [LabHosts(name, subnet, nodes=1) for name, subnet in zip(NAMES, SUBNETS)]
    try:
        for lab in labs:
            lab.up()
        yield [Cluster(lab, Deployer(lab.inventory)) for lab in labs]  # one checkout, one environment
    finally:
        if not KEEP_LAB:
            for lab in labs:
                lab.down()


def deploy_at_once(clusters: list[Cluster]) -> list[DeployRun]:
    with ThreadPoolExecutor(len(clusters)) as pool:
        return list(pool.map(lambda cluster: cluster.deploy(*SLURM_ONLY), clusters))


def key_problems(clusters: list[Cluster], states: list[dict]) -> list[str]:
    """Each cluster's hosts share its controller's key; no two clusters share one."""
    problems, controller_keys = [], {}
    for cluster, state in zip(clusters, states):
        controller_key = state[cluster.hosts.host_names[0]][0]
        controller_keys[cluster.name] = controller_key
        problems += [f"{host} has another munge key than its controller" for host, (key, _) in state.items() if key != controller_key]
    if len(set(controller_keys.values())) != len(clusters):
        problems.append(f"the clusters share one munge key: {controller_keys}")
    return problems


def test_two_clusters_from_one_checkout_keep_their_own_munge_keys(clusters):
    fresh = deploy_at_once(clusters)
    for cluster, run in zip(clusters, fresh):
        assert run.returncode == 0, f"fresh deploy of {cluster.name}:\n{run.log[-3000:]}"
    states = [cluster.munge() for cluster in clusters]
    problems = [f"after the fresh deploys: {p}" for p in key_problems(clusters, states)]
    for round_number in range(1, RERUN_ROUNDS + 1):
        runs = deploy_at_once(clusters)
        for cluster, run, before in zip(clusters, runs, states):
            where = f"re-run {round_number} of {cluster.name}"
            if run.returncode != 0:
                problems.append(f"{where}: exit {run.returncode}: {run.log[-1500:]}")
            elif run.changes:
                problems.append(f"{where}: {run.changes} changes: {run.changed_operations()}")
            after = cluster.munge()
            for host, (key, since) in after.items():
                if key != before[host][0]:
                    problems.append(f"{where}: the munge key of {host} changed")
                if since != before[host][1]:
                    problems.append(f"{where}: munged restarted on {host} ({before[host][1]} -> {since})")
        states = [cluster.munge() for cluster in clusters]
    problems += [f"after the re-runs: {p}" for p in key_problems(clusters, states)]
    assert not problems, "\n".join(problems)


def test_each_cluster_runs_jobs_and_refuses_the_others_credentials(clusters):
    """Real outcomes: each controller runs a job on its compute node (exit 0, right node);
    a MUNGE credential of one cluster is refused by the other (their keys differ)."""
    for cluster in clusters:
        controller = cluster.hosts.host(cluster.hosts.host_names[0])
        compute = cluster.hosts.host_names[1:]
        job = controller.run(f"timeout {JOB_TIMEOUT} srun --nodes={len(compute)} --time=1 hostname -s")
        assert job.rc == 0, (cluster.name, job.stderr)
        assert sorted(job.stdout.split()) == compute, cluster.name
    for issuer, checker in zip(clusters, clusters[::-1]):
        credential = issuer.hosts.host(issuer.hosts.host_names[0]).check_output("munge -n")
        decoded = checker.hosts.host(checker.hosts.host_names[-1]).run(f"echo {credential} | unmunge")
        assert decoded.rc != 0 and "Invalid credential" in decoded.stderr, (issuer.name, checker.name, decoded.stderr)
