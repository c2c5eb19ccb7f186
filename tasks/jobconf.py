"""Galaxy's job configuration (job_conf.xml), built with lxml and checked before use.

`build_job_conf` turns the Galaxy model into XML; `check_job_conf` checks any
job_conf.xml text the way Galaxy would need it (well-formed, every destination's
runner a defined plugin, the default destination exists, ids unique), so a bad
configuration never replaces the live file.
"""

from __future__ import annotations

import shlex
from collections import Counter
from typing import TYPE_CHECKING

from lxml import etree

if TYPE_CHECKING:
    from tasks.model import Galaxy

RUNNER_PLUGINS = {
    "local": "galaxy.jobs.runners.local:LocalJobRunner",
    "drmaa": "galaxy.jobs.runners.slurm:SlurmJobRunner",
    "cli": "galaxy.jobs.runners.cli:ShellJobRunner",
}
HANDLER_POOL = "job-handlers"

# sbatch options a nativeSpecification may carry (long names, and short letters
# that take a value). Anything else is refused: Slurm would reject the job.
SBATCH_LONG_OPTIONS = frozenset(
    """account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint
    container contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot
    dependency distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind
    gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags hint hold ignore-pbs input job-name
    kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus
    network nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu
    ntasks-per-node ntasks-per-socket open-mode output overcommit oversubscribe partition power priority profile
    propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches thread-spec
    threads-per-core time time-min tmp uid use-min-nodes verbose wait-all-nodes wckey""".split()
)
SBATCH_SHORT_OPTIONS = frozenset("ABCDFGJLMNSabcdeilmnopqtwx")  # each takes a value
SBATCH_SHORT_FLAGS = frozenset("HIOQWksv")
SBATCH_FLAGS = frozenset({"contiguous", "exclusive", "hold", "no-kill", "no-requeue", "overcommit", "oversubscribe",
                          "quiet", "requeue", "reboot", "spread-job", "use-min-nodes", "verbose", "ignore-pbs"})


def parse_native_specification(spec: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """sbatch-like options -> ([(option, value or None)], problems with them)."""
    try:
        tokens = shlex.split(spec)
    except ValueError as error:
        return [], [f"cannot be parsed ({error})"]
    options: list[tuple[str, str | None]] = []
    problems = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            if name not in SBATCH_LONG_OPTIONS:
                problems.append(f"unknown sbatch option --{name}")
            elif name in SBATCH_FLAGS:
                options.append((f"--{name}", None))
            elif has_value:
                options.append((f"--{name}", value))
            elif index + 1 < len(tokens):
                index += 1
                options.append((f"--{name}", tokens[index]))
            else:
                problems.append(f"--{name} needs a value")
        elif token.startswith("-") and len(token) >= 2:
            letter = token[1]
            if letter in SBATCH_SHORT_FLAGS and len(token) == 2:
                options.append((f"-{letter}", None))
            elif letter not in SBATCH_SHORT_OPTIONS:
                problems.append(f"unknown sbatch option -{letter}")
            elif len(token) > 2:
                options.append((f"-{letter}", token[2:]))
            elif index + 1 < len(tokens):
                index += 1
                options.append((f"-{letter}", tokens[index]))
            else:
                problems.append(f"-{letter} needs a value")
        else:
            problems.append(f"'{token}' is not an option (options start with - or --)")
        index += 1
    return options, problems


def native_specification_problems(spec: str) -> list[str]:
    return parse_native_specification(spec)[1]


def build_job_conf(galaxy: Galaxy) -> bytes:
    root = etree.Element("job_conf")
    plugins = etree.SubElement(root, "plugins", workers=str(galaxy.job_workers))
    for plugin_id, load in galaxy.runner_plugins().items():
        plugin = etree.SubElement(plugins, "plugin", id=plugin_id, type="runner", load=load)
        if load == RUNNER_PLUGINS["drmaa"] and galaxy.drmaa_library_path:
            _param(plugin, "drmaa_library_path", galaxy.drmaa_library_path)
    handlers = etree.SubElement(root, "handlers", assign_with="db-skip-locked")
    for name in galaxy.handler_names:
        etree.SubElement(handlers, "handler", id=name, tags=HANDLER_POOL)
    destinations = etree.SubElement(root, "destinations", default=galaxy.default_destination)
    for spec in galaxy.destinations:
        destination = etree.SubElement(destinations, "destination", id=spec.id, runner=spec.runner)
        if spec.runner == "slurm" and galaxy.job_runner == "cli":
            _param(destination, "shell_plugin", "LocalShell")
            _param(destination, "job_plugin", "Slurm")
        if spec.native_specification and galaxy.job_runner == "drmaa":
            _param(destination, "nativeSpecification", spec.native_specification)
        elif spec.native_specification:
            # The CLI runner's Slurm plugin writes each job_<option> param as an #SBATCH line.
            for option, value in parse_native_specification(spec.native_specification)[0]:
                _param(destination, f"job_{option}", value or "")
        for key, value in spec.params.items():
            _param(destination, key, value)
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")


def _param(parent: etree._Element, param_id: str, value: str) -> None:
    etree.SubElement(parent, "param", id=param_id).text = str(value)


def check_job_conf(text: bytes) -> list[str]:
    """Problems in a job_conf.xml, or [] when Galaxy can load it."""
    try:
        root = etree.fromstring(text)
    except etree.XMLSyntaxError as error:
        return [f"job_conf.xml is not well-formed XML: {error}"]
    problems = []
    if root.tag != "job_conf":
        problems.append(f"job_conf.xml: root element is <{root.tag}>, not <job_conf>")
    plugin_ids = [p.get("id") for p in root.iterfind("plugins/plugin")]
    destination_ids = [d.get("id") for d in root.iterfind("destinations/destination")]
    handler_ids = [h.get("id") for h in root.iterfind("handlers/handler")]
    for kind, ids in (("plugin", plugin_ids), ("destination", destination_ids), ("handler", handler_ids)):
        for duplicate in sorted(i for i, n in Counter(ids).items() if n > 1):
            problems.append(f"job_conf.xml: {kind} id '{duplicate}' is defined more than once")
        if None in ids:
            problems.append(f"job_conf.xml: a {kind} has no id")
    for plugin in root.iterfind("plugins/plugin"):
        if not plugin.get("load"):
            problems.append(f"job_conf.xml: plugin '{plugin.get('id')}' has no load= (the runner class)")
    for destination in root.iterfind("destinations/destination"):
        if destination.get("runner") not in plugin_ids:
            problems.append(
                f"job_conf.xml: destination '{destination.get('id')}' uses runner '{destination.get('runner')}', "
                f"which is not a defined plugin ({', '.join(filter(None, plugin_ids)) or 'none'})"
            )
    destinations = root.find("destinations")
    default = destinations.get("default") if destinations is not None else None
    if not destination_ids:
        problems.append("job_conf.xml: no destinations")
    elif default is None:
        problems.append("job_conf.xml: <destinations> has no default=")
    elif default not in destination_ids:
        problems.append(f"job_conf.xml: default destination '{default}' is not defined ({', '.join(destination_ids)})")
    return problems
