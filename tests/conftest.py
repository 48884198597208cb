"""Shared helpers: run the real command line in a subprocess, compose configs in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli.app import configure

# The settings the command-line apps make at start-up (schema, ${asset:} resolver, torch flags).
configure()

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *overrides: str, module: str = "src.run", cwd: Path = ROOT, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m src.run <overrides>` as a user would type it."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def small_run_args(tmp_path: Path) -> list[str]:
    """Overrides for a fast run whose outputs land in tmp_path/run."""
    return ["size=64", "steps=20", "logger=none", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]


# Modules whose tests run the real program end to end, or time it: `make test-fast` skips them.
SLOW_MODULES = {
    "test_bench",
    "test_cli",
    "test_controls",
    "test_device",
    "test_distributed",
    "test_faults",
    "test_run",
    "test_speed",
    "test_video",
    "test_visualize",
    "test_wandb",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
