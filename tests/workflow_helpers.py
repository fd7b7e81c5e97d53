"""The workflow copy the integration tests drive through the real snakemake CLI, and its dry-run parser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "scripts", "config", "meshsr", "report", "environment.yml", "profiles")

TINY_EXAMPLE = {
    "nodes": {"coarse": 260, "medium": 500, "fine": 900},
    "simulations": 3,
    "frames": 6,
    "seed": 0,
}

# config/config.yaml's train keys chosen for the 26-simulation example; copies take the library defaults.
EXAMPLE_TRAIN_KEYS = ("hidden", "layers", "epochs", "test_simulations", "validation_simulations")


def snakemake_executable() -> str:
    local = Path(sys.executable).parent / "snakemake"
    return str(local) if local.exists() else (shutil.which("snakemake") or "snakemake")


@dataclass
class Workflow:
    """A throw-away copy of the workflow; ``run`` calls the real ``snakemake`` CLI in it."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config" / "config.yaml"

    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def update_config(self, **changes) -> dict:
        config = self.config()
        config.update(changes)
        self.write_config(config)
        return config

    def run(self, *args: str, check: bool = True, cores: int = 2) -> subprocess.CompletedProcess:
        cmd = [snakemake_executable(), "--cores", str(cores), *args]
        # The copy's own package, not the installed one: tests edit library code in the copy.
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def clone(self, dest: Path) -> Workflow:
        """A copy with its results and Snakemake's records, mtimes kept: change and dry-run it, leave self as is."""
        shutil.copytree(self.root, dest, symlinks=True)
        return Workflow(dest)

    def planned_jobs(self, *targets: str) -> dict[str, int]:
        """Dry run; rule name -> number of jobs Snakemake would run."""
        return job_counts(self.run(*targets, "-n", "--quiet", "rules").stdout)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule name -> job count from the first 'Job stats' table of a dry run."""
    jobs: dict[str, int] = {}
    started = False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            started = True
        elif started and parts[:1] == ["total"]:
            break
        elif started and len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


def copy_workflow(dest: Path) -> Workflow:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    wf = Workflow(dest)
    config = wf.config()
    config["example"] = dict(TINY_EXAMPLE)
    # The shipped example's own training choices go with it: its split names simulations 4 and 5 of 26.
    for key in EXAMPLE_TRAIN_KEYS:
        config["train"].pop(key, None)
    wf.write_config(config)
    return wf
