"""The ``snakemake`` command that rebuilds one output, as the user ran the workflow.

Error messages quote it, so it must run as written: the target comes right after the
flags (``--configfile`` and ``--config`` take every word after them), then the user's
``--configfile`` files and ``--config`` overrides, every word quoted for the shell.

rules/common.smk records the command line's config files and ``--config`` arguments in
the environment variable :data:`RUN_OPTIONS` (JSON), which the jobs it starts inherit; a
process started otherwise (a test, a script) quotes a command without them.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

RUN_OPTIONS = "MESHSR_RUN_OPTIONS"


def run_options(configfiles: Iterable[str | Path], config_args: Sequence[str] | None) -> str:
    """The value of :data:`RUN_OPTIONS` for these command-line options (paths in the working directory relative)."""
    files = []
    for f in configfiles:
        rel = os.path.relpath(f)
        files.append(rel if not rel.startswith("..") else os.path.abspath(f))
    return json.dumps({"configfiles": files, "config": [str(a) for a in config_args or []]})


def _current() -> tuple[list[str], list[str]]:
    try:
        options = json.loads(os.environ.get(RUN_OPTIONS, "{}"))
        return [str(f) for f in options.get("configfiles", [])], [str(a) for a in options.get("config", [])]
    except (ValueError, AttributeError, TypeError):
        return [], []


def snakemake_command(target: str | Path, config: Sequence[str] = ()) -> str:
    """``snakemake --cores 1 --force TARGET [--configfile F ...] [--config K=V ...]``.

    ``config`` adds ``key=value`` words for keys the user's own ``--config`` does not set.
    """
    configfiles, config_args = _current()
    given = {a.split("=", 1)[0] for a in config_args}
    config_args += [a for a in config if a.split("=", 1)[0] not in given]
    words = ["snakemake", "--cores", "1", "--force", str(target)]
    if configfiles:
        words += ["--configfile", *configfiles]
    if config_args:
        words += ["--config", *config_args]
    return shlex.join(words)
