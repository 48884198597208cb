"""The report of a sweep: summary.csv, contact_sheet.png, and the Hydra callback that writes them."""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.common.files import atomic_path
from src.common.terms import LOSS_TERMS
from src.render.contact_sheet import Cell, SheetLayout, draw_contact_sheet
from src.render.text import distinct_labels, pretty_override, pretty_value, short_number
from src.sweeps.read import (
    JobResult,
    Sweep,
    job_directories,
    read_sweep,
)
from src.transfer.hydra_job import split_override

log = logging.getLogger(__name__)

SHEET_FILE = "contact_sheet.png"


SUMMARY_FILE = "summary.csv"


def sheet_title(sweep: Sweep) -> str:
    try:
        where = str(sweep.directory.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        where = str(sweep.directory)
    counts = f"{len(sweep.jobs)} job{'s' if len(sweep.jobs) != 1 else ''}"
    if sweep.failed:
        statuses = [job.status for job in sweep.jobs]
        counts += ": " + ", ".join(
            f"{statuses.count(s)} {s.upper() if s == 'failed' else s}"
            for s in ("completed", "failed", "no result", "not run")
            if s in statuses
        )
    title = f"Sweep {where} — {counts}"
    if sweep.fixed:
        title += "\n" + "fixed: " + "  ".join(pretty_override(o) for o in sweep.fixed)
    return title


def cells(sweep: Sweep) -> dict[tuple[int, int], Cell]:
    from PIL import Image

    result = {}
    for job in sweep.jobs:
        wall = f" · {job.wall_seconds:.1f} s" if job.wall_seconds is not None else ""
        image = None
        if job.final_image is not None:
            with Image.open(job.final_image) as opened:
                image = opened.convert("RGB")
        if job.status == "completed" and image is not None:
            final = (job.metrics or {}).get("final", {})
            caption = [f"job {job.num}{wall}", f"loss {short_number(final.get('total'))}"]
            result[job.position] = Cell("completed", image, caption)
        else:
            status = job.status if job.status != "completed" else "no result"
            caption = [f"job {job.num}" + (f"{wall}" if job.directory else ""), status]
            result[job.position] = Cell(status, None, caption, job.error)
    return result


def contact_sheet(sweep: Sweep) -> tuple[Any, SheetLayout]:
    """The sheet image and its layout (rows and columns as laid out by the swept parameters)."""
    axes = [(key, distinct_labels([pretty_value(v) for v in values])) for key, values in sweep.axes]
    return draw_contact_sheet(axes, cells(sweep), sheet_title(sweep))


def summary_rows(sweep: Sweep) -> tuple[list[str], list[dict[str, Any]]]:
    layers: list[str] = []
    for job in sweep.jobs:
        for layer in (job.metrics or {}).get("final_style_layers") or {}:
            if layer not in layers:
                layers.append(layer)
    columns = [
        "job",
        "status",
        *[key for key, _ in sweep.axes],
        "overrides",
        *[f"final_{key}" for key in LOSS_TERMS],
        *[f"final_style_{layer}" for layer in layers],
        "initial_total",
        "steps",
        "wall_seconds",
        "train_seconds",
        "seconds_per_step",
        "width",
        "height",
        "sheet_row",
        "sheet_col",
        "folder",
        "error",
    ]
    rows = []
    for job in sweep.jobs:
        metrics = job.metrics or {}
        final = metrics.get("final") or {}
        row: dict[str, Any] = {
            "job": job.num,
            "status": job.status,
            **{key: job.values.get(key, "") for key, _ in sweep.axes},
            "overrides": " ".join(job.overrides),
            **{f"final_{key}": final.get(key, "") for key in LOSS_TERMS},
            **{f"final_style_{layer}": (metrics.get("final_style_layers") or {}).get(layer, "") for layer in layers},
            "initial_total": (metrics.get("initial") or {}).get("total", ""),
            "steps": metrics.get("steps", ""),
            "wall_seconds": f"{job.wall_seconds:.3f}" if job.wall_seconds is not None else "",
            "train_seconds": metrics.get("wall_seconds", ""),
            "seconds_per_step": metrics.get("seconds_per_step", ""),
            "width": metrics.get("width", ""),
            "height": metrics.get("height", ""),
            "sheet_row": job.position[0],
            "sheet_col": job.position[1],
            "folder": str(job.directory) if job.directory else "",
            "error": job.error,
        }
        rows.append(row)
    return columns, rows


def write_report(sweep_dir: str | os.PathLike) -> Sweep:
    """Write contact_sheet.png and summary.csv into a sweep folder; returns what was read."""
    sweep = read_sweep(sweep_dir)
    columns, rows = summary_rows(sweep)
    summary = sweep.directory / SUMMARY_FILE
    with atomic_path(summary) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    sheet, _ = contact_sheet(sweep)
    with atomic_path(sweep.directory / SHEET_FILE) as temporary:
        sheet.save(temporary, format="PNG")
    return sweep


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, the contact sheet and the summary table.

    When a job failed, the sweep still reports every job and then exits with `failed_exit_code`.
    """

    def __init__(self, failed_exit_code: int = 1) -> None:
        self.failed_exit_code = failed_exit_code

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            sweep = write_report(sweep_dir)
        except Exception as error:  # the jobs' own results are all in place; say what went wrong
            log.exception("could not write the sweep report")
            print(
                f"error: could not write {sweep_dir / SHEET_FILE} and {SUMMARY_FILE}: {error}; "
                f"retry with `python -m src.sweep {sweep_dir}`",
                file=sys.stderr,
            )
            sys.exit(1)
        done = len(sweep.jobs) - len(sweep.failed)
        log.info(
            "sweep finished: %d of %d jobs completed; %s, %s",
            done,
            len(sweep.jobs),
            sweep_dir / SHEET_FILE,
            sweep_dir / SUMMARY_FILE,
        )
        if sweep.failed:
            names = "; ".join(
                f"job {job.num} ({swept_overrides(job, sweep) or '-'}): {job.status}" for job in sweep.failed
            )
            print(
                f"error: {len(sweep.failed)} of {len(sweep.jobs)} jobs did not complete: {names}. "
                f"See {sweep_dir / SUMMARY_FILE}",
                file=sys.stderr,
            )
            if self.failed_exit_code:
                sys.exit(self.failed_exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m src.sweep <sweep folder>...`: write the sweep report again."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m src.sweep SWEEP_FOLDER [SWEEP_FOLDER...]\n"
            "Write contact_sheet.png and summary.csv for finished (or partly finished) sweeps."
        )
        return 0 if argv else 2
    status = 0
    for folder in argv:
        if not (Path(folder) / "multirun.yaml").is_file() and not job_directories(Path(folder)):
            print(f"error: {folder} is not a sweep folder (no multirun.yaml, no job folders)", file=sys.stderr)
            status = 2
            continue
        sweep = write_report(folder)
        print(
            f"{Path(folder) / SHEET_FILE}, {Path(folder) / SUMMARY_FILE}: "
            f"{len(sweep.jobs) - len(sweep.failed)} of {len(sweep.jobs)} jobs completed"
        )
    return status


def swept_overrides(job: JobResult, sweep: Sweep) -> str:
    """The overrides of `job` that the sweep varies, as the sheet shows them."""
    return ",".join(pretty_override(o) for o in job.overrides if split_override(o)[0] in dict(sweep.axes))
