"""Native specifications of Galaxy's Slurm destinations, checked by the rules of the runner that reads them.

- The CLI runner writes each option as an `#SBATCH` line: sbatch's rules (sbatch(1)).
- The DRMAA runner hands the string to slurm-drmaa, which parses it itself
  (slurm-drmaa 1.1.6 README, "Native specification", and `slurmdrmaa_parse_native`
  in its slurm_drmaa/util.c): options split on blanks with no shell quoting; short
  options as `-X value` (two words; `-Xvalue` is refused); long options as
  `--name=value` (`--name value` is refused: "long option missing '='?"), except
  the flags below; its own list of names; counts and sizes as plain numbers
  (`--mem` in MB: "not an number: 4G"); times as `H:MM[:SS]` (no days:
  "invalid date/time format: 1-00:00:00", no bare minutes).

Each problem names the option, why the runner refuses it and, where one exists,
the form it accepts (`--mem=4G` -> `--mem=4096`): nothing is rewritten silently.
"""

from __future__ import annotations

import re
import shlex

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


def parse_sbatch_options(spec: str) -> tuple[list[tuple[str, str | None]], list[str]]:
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


# slurm-drmaa 1.1.6: the long options it knows (util.c slurmdrmaa_parse_additional_attr),
# those that take no value, and the short letters (slurmdrmaa_parse_native).
DRMAA_LONG_OPTIONS = frozenset(
    """account acctg-freq comment constraint contiguous cpus-per-task error exclusive mem mem-per-cpu mincpus
    nodelist nodes ntasks-per-node output partition qos requeue reservation share job_name time_limit time ntasks
    gres clusters no-kill licenses mail-type no-requeue exclude tmp dependency""".split()
)
DRMAA_FLAGS = frozenset({"contiguous", "exclusive", "requeue", "share", "no-kill", "no-requeue"})
DRMAA_SHORT_OPTIONS = {  # letter -> the long option it stands for
    "A": "account", "C": "constraint", "c": "cpus-per-task", "d": "dependency", "e": "error", "N": "nodes",
    "o": "output", "p": "partition", "w": "nodelist", "J": "job_name", "t": "time", "n": "ntasks", "x": "exclude",
    "L": "licenses", "M": "clusters",
}
DRMAA_SHORT_FLAGS = frozenset("ks")
DRMAA_SHORT_FLAG_NAMES = {"k": "no-kill", "s": "share"}
# Values slurm-drmaa reads with fsd_atoi (a whole number, nothing after it); sizes are in MB.
DRMAA_NUMBERS = frozenset({"cpus-per-task", "mem", "mem-per-cpu", "mincpus", "ntasks-per-node", "ntasks", "tmp"})
DRMAA_MEGABYTES = frozenset({"mem", "mem-per-cpu", "tmp"})
DRMAA_TIMES = frozenset({"time", "time_limit"})
_SIZE = re.compile(r"(\d+)([KMGT])B?", re.IGNORECASE)
_UNIT_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def native_specification_problems(spec: str, job_runner: str) -> list[str]:
    """Problems of a destination's native specification for `job_runner` ("drmaa" or "cli"), or []."""
    if job_runner == "drmaa":
        return drmaa_native_specification_problems(spec)
    return parse_sbatch_options(spec)[1]


def drmaa_native_specification_problems(spec: str) -> list[str]:
    """What slurm-drmaa 1.1.6 would refuse in `spec` (each with the accepted form), or []."""
    return parse_drmaa_options(spec)[1]


def parse_drmaa_options(spec: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """slurm-drmaa's reading of `spec`: ([(long option name, value or None for a flag)], problems).

    Short options come back under the long name they stand for (`-t 1:30` -> ("time", "1:30"));
    values as written, in slurm-drmaa's units (times H:MM[:SS], sizes in MB).
    """
    options: list[tuple[str, str | None]] = []
    problems = []
    words = spec.split()
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--"):
            name, has_value, value = word[2:].partition("=")
            if name not in DRMAA_LONG_OPTIONS:
                problems.append(f"--{name} is not an option slurm-drmaa knows (it knows: {', '.join(sorted(DRMAA_LONG_OPTIONS))})")
            elif name in DRMAA_FLAGS:
                options.append((name, None))
            elif not has_value:
                given = f" {words[index + 1]}" if index + 1 < len(words) and not words[index + 1].startswith("-") else ""
                problems.append(f"--{name}{given}: slurm-drmaa needs long options as --{name}=VALUE")
                index += 1 if given else 0
            else:
                options.append((name, value))
                problems.extend(_drmaa_value_problems(f"--{name}=", name, value))
        elif re.fullmatch(r"-[A-Za-z]", word):
            letter = word[1]
            if letter in DRMAA_SHORT_FLAGS:
                options.append((DRMAA_SHORT_FLAG_NAMES[letter], None))
            elif letter not in DRMAA_SHORT_OPTIONS:
                problems.append(f"-{letter} is not an option slurm-drmaa knows")
                index += 1 if index + 1 < len(words) and not words[index + 1].startswith("-") else 0
            elif index + 1 >= len(words):
                problems.append(f"-{letter} needs a value (-{letter} VALUE)")
            else:
                index += 1
                options.append((DRMAA_SHORT_OPTIONS[letter], words[index]))
                problems.extend(_drmaa_value_problems(f"-{letter} ", DRMAA_SHORT_OPTIONS[letter], words[index]))
        elif re.fullmatch(r"-[A-Za-z].+", word):
            problems.append(f"{word}: slurm-drmaa needs a short option and its value as two words: {word[:2]} {word[2:]}")
        else:
            problems.append(f"'{word}' is not an option (options start with - or --; slurm-drmaa does not read quotes)")
        index += 1
    return options, problems


def _drmaa_value_problems(prefix: str, name: str, value: str) -> list[str]:
    if name in DRMAA_NUMBERS and not re.fullmatch(r"[+-]?\d+", value):
        size = _SIZE.fullmatch(value)
        if name in DRMAA_MEGABYTES and size:
            megabytes = max(1, round(int(size[1]) * _UNIT_MB[size[2].upper()]))
            return [f"{prefix}{value}: slurm-drmaa takes a number of megabytes without a unit: {prefix}{megabytes}"]
        return [f"{prefix}{value}: slurm-drmaa takes a whole number here"]
    if name == "nodes" and not re.fullmatch(r"\d+(-\d+)?", value):
        return [f"{prefix}{value}: slurm-drmaa takes MIN or MIN-MAX node counts"]
    if name in DRMAA_TIMES and not re.fullmatch(r"\d+:\d+(:\d+)?", value):
        return [f"{prefix}{value}: slurm-drmaa takes times as H:MM or H:MM:SS" + _drmaa_time_hint(prefix, value)]
    return []


def _drmaa_time_hint(prefix: str, value: str) -> str:
    """The H:MM:SS form of a Slurm time."""
    seconds = slurm_time_seconds(value)
    if seconds is None:
        return ""
    return f": {prefix}{hms(seconds)}"


def slurm_time_seconds(value: str) -> int | None:
    """Seconds of a Slurm time as sbatch(1) --time reads it (minutes, M:S, H:M:S, D-H, D-H:M,
    D-H:M:S) and scontrol prints MaxTime; None for UNLIMITED/INFINITE or an unreadable value."""
    match = _SLURM_TIME.fullmatch(value.strip())
    if not match:
        return None
    days, first, second, third = (int(part) if part else None for part in match.groups())
    if days is None and second is None:  # minutes
        return first * 60
    if days is None and third is None:  # minutes:seconds
        return first * 60 + second
    return ((days or 0) * 24 + first) * 3600 + (second or 0) * 60 + (third or 0)


def hms(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


# slurm-drmaa's names that sbatch spells otherwise.
DRMAA_TO_SBATCH = {"job_name": "job-name", "time_limit": "time", "share": "oversubscribe"}


def sbatch_arguments(spec: str | None, job_runner: str) -> list[str]:
    """What a destination's native specification asks of Slurm, as sbatch arguments
    (for `sbatch --test-only`); `spec` is one the model accepted for `job_runner`.

    drmaa: slurm-drmaa's names become sbatch's (--job_name -> --job-name, --time_limit
    -> --time, -s/--share -> --oversubscribe) and its times H:MM[:SS], hours first,
    become H:MM:SS (sbatch would read `1:30` as 1 minute 30 seconds). cli: the options
    as the CLI runner's Slurm plugin writes them (#SBATCH lines).
    """
    if not spec:
        return []
    arguments = []
    if job_runner == "drmaa":
        for name, value in parse_drmaa_options(spec)[0]:
            name = DRMAA_TO_SBATCH.get(name, name)
            if value is not None and name == "time":
                hours, minutes, seconds = (value.split(":") + ["0"])[:3]
                value = hms(int(hours) * 3600 + int(minutes) * 60 + int(seconds))
            arguments.append(f"--{name}" if value is None else f"--{name}={value}")
        return arguments
    for option, value in parse_sbatch_options(spec)[0]:
        if value is None:
            arguments.append(option)
        elif option.startswith("--"):
            arguments.append(f"{option}={value}")
        else:
            arguments += [option, value]
    return arguments
