"""Galaxy's job configuration (job_conf.xml), built with lxml and checked before use.

`build_job_conf` turns the Galaxy model into XML; `check_job_conf` checks any
job_conf.xml text the way Galaxy would need it (well-formed, every destination's
runner a defined plugin, the default destination exists, ids unique), so a bad
configuration never replaces the live file.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from lxml import etree

from tasks.native_specification import parse_sbatch_options

if TYPE_CHECKING:
    from tasks.model.galaxy import Galaxy

RUNNER_PLUGINS = {
    "local": "galaxy.jobs.runners.local:LocalJobRunner",
    "drmaa": "galaxy.jobs.runners.slurm:SlurmJobRunner",
    "cli": "galaxy.jobs.runners.cli:ShellJobRunner",
}
HANDLER_POOL = "job-handlers"


def runner_plugins(job_runner: str) -> dict[str, str]:
    """Plugin id -> runner class: "slurm" is the DRMAA or the CLI runner (`job_runner`), as chosen."""
    return {"local": RUNNER_PLUGINS["local"], "slurm": RUNNER_PLUGINS[job_runner]}


def verification_tools(galaxy: Galaxy) -> list[tuple[str, str]]:
    """[(destination id, tool id)]: the deploy's verification tool mapped to each Slurm destination
    but the default (whose jobs the verification's upload proves). Galaxy picks a destination per
    tool (job_conf.xml <tools>), so a job through a given destination needs a tool of its own."""
    return [(d.id, f"pgs_verify_{re.sub(r'[^A-Za-z0-9_]', '_', d.id)}") for d in galaxy.destinations
            if d.runner == "slurm" and d.id != galaxy.default_destination]


def build_job_conf(galaxy: Galaxy) -> bytes:
    root = etree.Element("job_conf")
    plugins = etree.SubElement(root, "plugins", workers=str(galaxy.job_workers))
    for plugin_id, load in runner_plugins(galaxy.job_runner).items():
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
            for option, value in parse_sbatch_options(spec.native_specification)[0]:
                _param(destination, f"job_{option}", value or "")
        for key, value in spec.params.items():
            _param(destination, key, value)
    verification = verification_tools(galaxy)
    if verification:
        tools = etree.SubElement(root, "tools")
        for destination_id, tool_id in verification:
            etree.SubElement(tools, "tool", id=tool_id, destination=destination_id)
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
