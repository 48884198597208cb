"""Reading a sweep folder: every job's overrides, status, metrics and final image."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.transfer.hydra_job import read_sweep_arguments, split_override

JOB_FILE = "job.json"


@dataclass
class JobResult:
    num: int
    directory: Path | None
    overrides: list[str]
    status: str  # completed | failed | no result | not run
    error: str = ""
    metrics: dict[str, Any] | None = None
    wall_seconds: float | None = None
    position: tuple[int, int] = (0, 0)

    @property
    def values(self) -> dict[str, str]:
        return dict(split_override(o) for o in self.overrides)

    @property
    def final_image(self) -> Path | None:
        if self.status != "completed" or self.directory is None:
            return None
        path = self.directory / "final.png"
        return path if path.is_file() else None


@dataclass
class Sweep:
    directory: Path
    axes: list[tuple[str, list[str]]]
    fixed: list[str]
    jobs: list[JobResult] = field(default_factory=list)

    @property
    def failed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status != "completed"]


def job_directories(sweep_dir: Path) -> list[Path]:
    found = {
        p.parent.parent
        for pattern in ("*/.hydra/overrides.yaml", "*/*/.hydra/overrides.yaml")
        for p in sweep_dir.glob(pattern)
    }
    return sorted(found)


def read_job(directory: Path) -> JobResult:
    overrides = [str(o) for o in OmegaConf.load(directory / ".hydra" / "overrides.yaml")]
    record: dict[str, Any] = {}
    if (directory / JOB_FILE).is_file():
        try:
            record = json.loads((directory / JOB_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
    num = record.get("num")
    if num is None:
        try:
            num = OmegaConf.select(OmegaConf.load(directory / ".hydra" / "hydra.yaml"), "hydra.job.num")
        except Exception:
            num = None
    if num is None:
        num = int(directory.name) if directory.name.isdigit() else -1
    metrics = None
    if (directory / "metrics.json").is_file():
        try:
            metrics = json.loads((directory / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            metrics = None
    status = record.get("status")
    if status == "completed" or (status is None and metrics is not None and (directory / "final.png").is_file()):
        status = "completed" if metrics is not None else "no result"
    elif status == "failed":
        status = "failed"
    else:  # still "running" at the end of the sweep: the job was killed (timeout, out of memory...)
        status = "no result"
    error = record.get("error", "")
    if status == "no result" and not error:
        error = f"the job stopped without finishing (last state: {record.get('status', 'unknown')}); see its log"
    wall = record.get("wall_seconds")
    return JobResult(
        int(num),
        directory,
        overrides,
        status,
        error,
        metrics if status == "completed" else None,
        float(wall) if wall is not None else None,
    )


def read_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    """Every job of a sweep folder, each placed on the grid of swept parameters."""
    sweep_dir = Path(sweep_dir)
    jobs = [read_job(d) for d in job_directories(sweep_dir)]
    parsed = read_sweep_arguments(sweep_dir)
    if parsed is not None:
        declared, fixed = parsed
    else:  # no multirun.yaml: the swept keys are those whose value differs between jobs
        keys: list[str] = []
        for job in sorted(jobs, key=lambda j: j.num):
            keys += [k for k in job.values if k not in keys]
        declared = [(k, None) for k in keys if len({job.values.get(k) for job in jobs}) > 1]
        common = [k for k in keys if (k, None) not in declared]
        fixed = [f"{k}={jobs[0].values[k]}" for k in common if k in jobs[0].values]
    axes: list[tuple[str, list[str]]] = []
    for key, values in declared:
        if values is None:  # fill from the jobs, in job order
            values = []
            for job in sorted(jobs, key=lambda j: j.num):
                value = job.values.get(key)
                if value is not None and value not in values:
                    values.append(value)
        axes.append((key, list(values)))
    # jobs whose value is not on an axis (e.g. stale folders from an earlier sweep) still show up
    for job in jobs:
        for key, values in axes:
            value = job.values.get(key)
            if value is not None and value not in values:
                values.append(value)
    shape = [len(values) for _, values in axes]
    placed: dict[tuple[int, ...], JobResult] = {}
    for job in sorted(jobs, key=lambda j: j.num):
        index = tuple(values.index(job.values[key]) if key in job.values else 0 for key, values in axes)
        earlier = placed.get(index)
        if earlier is None or job_time(job) >= job_time(earlier):
            placed[index] = job
    results = []
    for number, index in enumerate(itertools.product(*[range(n) for n in shape])):
        job = placed.get(index)  # type: ignore[assignment]  # None: handled next
        if job is None:
            overrides = [f"{key}={values[i]}" for (key, values), i in zip(axes, index)]
            job = JobResult(number, None, overrides, "not run", "no job folder for these overrides")
        job.position = grid_position(index, shape)
        results.append(job)
    return Sweep(sweep_dir, axes, fixed, sorted(results, key=lambda j: (j.num, j.position)))


def job_time(job: JobResult) -> float:
    path = job.directory / JOB_FILE if job.directory else None
    return path.stat().st_mtime if path is not None and path.is_file() else 0.0


def grid_position(index: Sequence[int], shape: Sequence[int]) -> tuple[int, int]:
    """(row, col) of a job: the last swept parameter is the column, the others make up the row."""
    if not shape:
        return 0, 0
    row = 0
    for i, n in zip(index[:-1], shape[:-1]):
        row = row * n + i
    return row, index[-1]
