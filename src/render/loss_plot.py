"""loss.png: every loss component of a run against the step."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from src.common.files import atomic_path
from src.common.terms import LOGGED_TERMS

MAIN_TERMS = LOGGED_TERMS


MAIN_COLOURS = {"loss/total": "black", "loss/content": "tab:blue", "loss/style": "tab:red", "loss/tv": "tab:green"}


def plot_losses(history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike, title: str = "") -> Path:
    """Every loss component against step on a log scale: the main terms bold, each style layer thin.

    Zero or non-finite values cannot be drawn on a log axis; a term that is zero throughout is
    named in the legend as "= 0" instead of being silently left out.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9.5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    layer_keys = sorted(k for k in history if k.startswith("loss/style/"))
    other_keys = [k for k in history if k not in MAIN_TERMS and k not in layer_keys]
    # style layers shallow -> deep in one colour ramp, distinct from the main terms' colours
    ramp = colormaps["viridis"]
    layer_colours = {key: ramp(0.1 + 0.8 * i / max(1, len(layer_keys) - 1)) for i, key in enumerate(layer_keys)}
    markers = max((len(points) for points in history.values()), default=0) <= 30  # the same on every line
    drawn = 0
    for key in [*MAIN_TERMS, *other_keys, *layer_keys]:
        points = history.get(key)
        if not points:
            continue
        points = sorted(points)
        steps = [s for s, v in points if math.isfinite(v) and v > 0]
        values = [v for s, v in points if math.isfinite(v) and v > 0]
        label = key.removeprefix("loss/")
        if not values:
            axes.plot([], [], linestyle="none", label=f"{label} = 0")
            continue
        if key in MAIN_TERMS:
            style: dict[str, Any] = dict(color=MAIN_COLOURS[key], linewidth=2.2 if key == "loss/total" else 1.6)
        else:
            style = dict(linewidth=1.0, linestyle="--", alpha=0.9, color=layer_colours.get(key))
        marker = "o" if markers else None
        axes.plot(steps, values, label=label, marker=marker, markersize=3, **style)
        drawn += 1
    if drawn:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step (optimiser updates applied)")
    axes.set_ylabel("weighted loss (log scale)")
    axes.grid(True, which="major", alpha=0.4)
    axes.grid(True, which="minor", alpha=0.12)
    if title:
        axes.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    if history:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path
