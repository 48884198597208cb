"""What a video run records: frames.csv (one row per frame), loss.png over frames, metrics.json."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FRAMES_CSV = "frames.csv"
LOSS_PLOT = "loss.png"
# Columns first in frames.csv; per-layer and per-previous-frame terms follow.
MAIN_COLUMNS = [
    "frame",
    "time",
    "steps",
    "seconds",
    "loss/total",
    "loss/content",
    "loss/style",
    "loss/tv",
    "loss/temporal",
    "warping_error",
    "content_warping_error",
    "reliable",
]
PLOTTED = ("loss/total", "loss/content", "loss/style", "loss/temporal")


def read_rows(run_dir: Path) -> list[dict[str, float]]:
    """The finished frames' rows, in order; numbers as floats ('' as NaN)."""
    path = run_dir / FRAMES_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = [
            {key: float(value) if value != "" else math.nan for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]
    for expected, row in enumerate(rows):
        if int(row["frame"]) != expected:
            raise ValueError(f"{path}: row {expected} is frame {row['frame']}")
    return rows


def write_rows(run_dir: Path, rows: Sequence[Mapping[str, float]]) -> Path:
    """frames.csv rewritten whole and atomically (a kill never leaves half a row)."""
    extra = sorted({key for row in rows for key in row} - set(MAIN_COLUMNS))
    columns = MAIN_COLUMNS + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: format_number(row.get(key, math.nan)) for key in columns})
    path = run_dir / FRAMES_CSV
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(buffer.getvalue())
    os.replace(temporary, path)
    return path


def format_number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def plot_over_frames(rows: Sequence[Mapping[str, float]], path: Path, title: str) -> Path:
    """The main loss terms of each frame's result and the warping error, against the frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6.5), dpi=100)
    FigureCanvasAgg(figure)
    losses, warping = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    frames = [int(row["frame"]) for row in rows]
    for key in PLOTTED:
        points = [
            (f, row[key])
            for f, row in zip(frames, rows, strict=True)
            if math.isfinite(row.get(key, math.nan)) and row[key] > 0
        ]
        if points:
            losses.plot(
                *zip(*points, strict=True),
                marker="o",
                markersize=2.5,
                label=key.removeprefix("loss/"),
                linewidth=2 if key == "loss/total" else 1.2,
            )
        else:
            losses.plot([], [], linestyle="none", label=f"{key.removeprefix('loss/')} = 0")
    losses.set_yscale("log")
    losses.set_ylabel("weighted loss at the frame's result")
    losses.legend(fontsize=8)
    losses.set_title(title, fontsize=9)
    losses.grid(True, which="both", alpha=0.3)
    for key, label in (("warping_error", "stylised"), ("content_warping_error", "content (reference)")):
        points = [(f, row[key]) for f, row in zip(frames, rows, strict=True) if math.isfinite(row.get(key, math.nan))]
        if points:
            warping.plot(*zip(*points, strict=True), marker="o", markersize=2.5, label=label)
    warping.set_ylabel("warping error")
    warping.set_xlabel("frame")
    warping.legend(fontsize=8)
    warping.grid(True, alpha=0.3)
    figure.tight_layout()
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary)
    os.replace(temporary, path)
    return path


def mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def summarise(rows: Sequence[Mapping[str, float]], info: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json: means over frames (`final`, as a single run's, so sweeps can compare runs),
    the warping errors, and the cost of the first frame against the others."""
    terms = ("total", "content", "style", "tv", "temporal")
    later = rows[1:]
    steps = int(sum(row["steps"] for row in rows))
    seconds = sum(row["seconds"] for row in rows)
    return {
        **info,
        "frames": len(rows),
        "final": {key: mean([row[f"loss/{key}"] for row in rows]) for key in terms},
        "initial": {"total": rows[0].get("initial_total", math.nan)} if rows else {},
        "final_style_layers": {
            key.removeprefix("loss/style/"): mean([row[key] for row in rows])
            for key in rows[0]
            if key.startswith("loss/style/")
        }
        if rows
        else {},
        "warping_error": mean([row["warping_error"] for row in later]),
        "content_warping_error": mean([row["content_warping_error"] for row in later]),
        "steps": steps,
        "wall_seconds": seconds,
        "seconds_per_step": seconds / max(1, steps),
        "seconds_first_frame": rows[0]["seconds"] if rows else math.nan,
        "seconds_per_frame": mean([row["seconds"] for row in later]),
    }
