"""metrics.json: what a run reports at its end (also after a NaN or an interrupt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch

from src.common.files import write_json
from src.common.images import (
    save_image,
)
from src.common.terms import main_terms
from src.transfer.module import StyleTransfer


def keep_last_good(
    module: StyleTransfer, trainer: pl.Trainer, output_dir: Path, wall_seconds: float, error: str
) -> None:
    """After a NaN/Inf: put back the last image with a finite loss and save it with its metrics."""
    with torch.no_grad():
        module.image.copy_(module.last_good_image)
    save_image(module.image, output_dir / "last_good.png")
    metrics = collect_metrics(module, module.evaluate(), module.last_good_step, wall_seconds, status="failed")
    metrics["error"] = error
    write_metrics(output_dir, metrics)


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(output_dir / "metrics.json", metrics)


def collect_metrics(
    module: StyleTransfer, final: dict[str, float], steps: int, wall_seconds: float, status: str = "finished"
) -> dict[str, Any]:
    height, width = module.image.shape[-2:]

    return {
        "status": status,
        "initial": main_terms(module.initial_losses),
        "final": main_terms(final),
        "final_style_layers": {
            k.removeprefix("loss/style/"): v for k, v in final.items() if k.startswith("loss/style/")
        },
        "steps": int(steps),
        "wall_seconds": wall_seconds,
        "seconds_per_step": wall_seconds / max(1, steps),
        "height": int(height),
        "width": int(width),
        "device": str(module.device),
        "compute_dtype": str(module.backbone.compute_dtype).removeprefix("torch."),
        **({"tiling": cast(Any, module).tiling_summary()} if hasattr(module, "tiling_summary") else {}),
        # Several styles: each one's share of the final style term (they sum to final.style).
        **(
            {
                "final_styles": {
                    k.removeprefix("loss/blend/"): v for k, v in final.items() if k.startswith("loss/blend/")
                }
            }
            if any(k.startswith("loss/blend/") for k in final)
            else {}
        ),
    }


def add_levels(
    metrics: dict[str, Any],
    levels: list[dict[str, Any]],
    module: StyleTransfer,
    steps: int,
    wall_seconds: float,
    final: dict[str, float],
) -> None:
    """A pyramid run's metrics: `initial` is the first level's start, `wall_seconds` covers every
    level (`seconds_per_step` stays the finest level's), `pyramid` lists the levels."""
    height, width = module.image.shape[-2:]
    finest = {
        "height": int(height),
        "width": int(width),
        "steps": int(steps),
        "wall_seconds": wall_seconds,
        "initial": metrics["initial"],
        "final": metrics["final"],
    }
    metrics["initial"] = dict(levels[0]["initial"])
    metrics["wall_seconds"] = wall_seconds + sum(level["wall_seconds"] for level in levels)
    metrics["pyramid"] = [*levels, finest]
