"""Runs behind the docs' pictures: `python -m src.run` in a subprocess, kept and reused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from src.common.paths import PROJECT_ROOT


def cached_run(name: str, folder: Path, overrides: list[str]) -> Path:
    """`python -m src.run` with `overrides` (plus logger=none, no checkpoints) into `folder`; a
    folder that already holds a finished run is reused, an unfinished one is started over."""
    if (folder / "final.png").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    command = [
        sys.executable,
        "-m",
        "src.run",
        "logger=none",
        "checkpoint_every=0",
        *overrides,
        f"hydra.run.dir={folder}",
    ]
    print(" ".join(command[1:]), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return folder
