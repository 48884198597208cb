"""Callbacks that write what a run produces: the loss terms of every step, pictures, records.

Every run writes loss.png (each loss component against step) and, with snapshots on,
step_XXXXX.png files and progress.gif; the loggers get the snapshots, the input images,
the resolved config, the final image and the final metrics.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger

from src.common.images import save_image, to_pil
from src.common.terms import LOGGED_TERMS
from src.render.gif import write_progress_gif
from src.render.loss_plot import plot_losses
from src.render.text import pretty_value
from src.transfer.loggers import flatten, log_config, log_image, log_summary

log = logging.getLogger(__name__)

LOSS_PLOT = "loss.png"
PROGRESS_GIF = "progress.gif"
PROGRESS_TERMS = LOGGED_TERMS


class Snapshots(pl.Callback):
    """Save the image as step_XXXXX.png every `every` optimiser steps (and at step 0), and hand
    each snapshot to the loggers (a wandb.Image in W&B, an image in TensorBoard)."""

    def __init__(self, every: int, directory: str | Path) -> None:
        self.every = every
        self.directory = Path(directory)
        self.frames: list[tuple[int, Path]] = []

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.every > 0 and trainer.global_step == 0:
            self.save(trainer, module, 0)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0:
            self.save(trainer, module, step)

    def state_dict(self) -> dict[str, Any]:
        return {"frames": [(step, str(path)) for step, path in self.frames]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run's progress.gif starts with the snapshots taken before the stop."""
        self.frames = [(int(step), Path(path)) for step, path in state.get("frames", []) if Path(path).is_file()]

    def save(self, trainer: pl.Trainer, module: pl.LightningModule, step: int) -> None:
        self.frames = [frame for frame in self.frames if frame[0] != step]
        path = save_image(cast(torch.Tensor, module.image), self.directory / f"step_{step:05d}.png")
        self.frames.append((step, path))
        image = to_pil(cast(torch.Tensor, module.image))
        for logger in trainer.loggers:
            log_image(logger, "snapshot", image, step, caption=f"step {step}")


class LossHistory(pl.Callback):
    """Every loss component at every step: handed to the loggers and kept for loss.png.

    The terms are read off the device once a step (`module.step_terms`, one stacked copy).
    Lightning's `self.log` re-walks its result store at every call, which for a dozen keys a
    step costs a good part of a small step, and more than a whole GPU step.

    The loss computed during update k is that of the image after k-1 updates, so it is
    recorded at step k-1; the final evaluation adds the point at the last step.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.latest: dict[str, float] = {}
        self.restored = False

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run: the steps before the checkpoint, for loss.png and the CSV file."""
        self.history = {
            key: [(int(step), float(value)) for step, value in points]
            for key, points in state.get("history", {}).items()
        }
        self.restored = True

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """A resumed run's csv/metrics.csv (which Lightning's CSV logger starts anew) gets the rows
        before the checkpoint back, so that it is the file an uninterrupted run writes."""
        if not self.restored:
            return
        rows: dict[int, dict[str, torch.Tensor | float]] = {}
        for key, points in self.history.items():
            for step, value in points:
                if step < trainer.global_step:
                    rows.setdefault(step, {})[key] = value
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                for step in sorted(rows):
                    logger.log_metrics(rows[step], step=step)
                logger.save()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        terms = cast(dict[str, torch.Tensor], module.step_terms)
        step = trainer.global_step - 1
        self.latest = dict(zip(terms, torch.stack(list(terms.values())).tolist()))
        for key, value in self.latest.items():
            self.add(key, step, value)
        for logger in trainer.loggers:
            logger.log_metrics(self.latest, step=step)
            logger.save()  # as Lightning does after each step: a killed run keeps its rows

    def add(self, key: str, step: int, value: float) -> None:
        points = self.history.setdefault(key, [])
        if points and points[-1][0] == step:
            points[-1] = (step, value)
        else:
            points.append((step, value))


class RunRecord(pl.Callback):
    """Hands the loggers the resolved config and the input images at the start; if the run
    fails, still writes loss.png and progress.gif of what it got through."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False, enum_to_str=True)
        self.config = cast(dict[str, Any], config)
        self.config_text = OmegaConf.to_yaml(cfg, resolve=True)
        self.title = plot_title(cfg)
        self.output_dir = Path(output_dir)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            log_config(logger, self.config, self.config_text)
            log_image(logger, "input/content", to_pil(cast(torch.Tensor, module.content_image)), 0, caption="content")
            log_image(logger, "input/style", to_pil(cast(torch.Tensor, module.style_image)), 0, caption="style")

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        write_run_pictures(trainer, module, self.output_dir, final=None)


def find_callback(trainer: pl.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)  # type: ignore[attr-defined]


def plot_title(cfg: DictConfig) -> str:
    def stem(path: Any) -> str:
        return Path(str(path)).stem if path else "?"

    def number(value: Any) -> str:
        return pretty_value(str(float(value)))

    optimizer = str(cfg.optimizer.get("_target_", "?")).rsplit(".", 1)[-1]
    return (
        f"{stem(cfg.content.get('path'))} in the style of {stem(cfg.style.get('path'))}: "
        f"alpha={number(cfg.alpha)} beta={number(cfg.beta)} tv_weight={number(cfg.tv_weight)}, "
        f"{optimizer}, size {cfg.size}, init {cfg.init.kind}"
    )


def write_run_pictures(
    trainer: pl.Trainer, module: pl.LightningModule, output_dir: Path, final: dict[str, float] | None
) -> None:
    """loss.png always; progress.gif when there are snapshots. Never fails the run."""
    history_callback = find_callback(trainer, LossHistory)
    record = find_callback(trainer, RunRecord)
    step = trainer.global_step
    try:
        history = {k: list(v) for k, v in (history_callback.history if history_callback else {}).items()}
        if final:
            for key, value in final.items():
                points = history.setdefault(key, [])
                points[:] = [p for p in points if p[0] != step] + [(step, value)]
        if history:
            title = record.title if record else ""
            plot_losses(history, output_dir / LOSS_PLOT, title + ("" if final else " (run failed)"))
    except Exception as error:  # a picture must never cost the run
        log.warning("could not write %s: %s", LOSS_PLOT, error)
    snapshots = find_callback(trainer, Snapshots)
    try:
        if snapshots and snapshots.frames:
            frames: list[tuple[int, Any]] = list(snapshots.frames)
            if frames[-1][0] != step:
                frames.append((step, to_pil(cast(torch.Tensor, module.image))))
            write_progress_gif(
                frames, output_dir / PROGRESS_GIF, total_steps=trainer.max_steps if final is None else step
            )
    except Exception as error:
        log.warning("could not write %s: %s", PROGRESS_GIF, error)


class RunClock(pl.Callback):
    """The seconds a run has optimised, summed over its interruptions (kept in the checkpoint)."""

    def __init__(self) -> None:
        self.before = 0.0
        self.started = time.perf_counter()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before = float(state.get("seconds", 0.0))


def loss_callbacks(label: str = "") -> list[pl.Callback]:
    """The loss terms of every step to the loggers, loss.png and the progress bar (`label`: a pyramid level)."""
    from src.transfer.progress import StepProgressBar

    return [LossHistory(), StepProgressBar(label)]


def run_callbacks(cfg: DictConfig, output_dir: Path, label: str = "") -> list[pl.Callback]:
    """The callbacks every style-transfer run gets."""
    return [Snapshots(cfg.snapshot_every, output_dir), *loss_callbacks(label), RunRecord(cfg, output_dir)]


def log_final(trainer: pl.Trainer, module: pl.LightningModule, metrics: dict[str, Any], output_dir: Path) -> None:
    """After final.png and metrics.json: loss.png, progress.gif, and the loggers' final image and summary."""
    output_dir = Path(output_dir)
    final_terms = {f"loss/{k}": v for k, v in metrics["final"].items()}
    final_terms.update({f"loss/style/{k}": v for k, v in (metrics.get("final_style_layers") or {}).items()})
    write_run_pictures(trainer, module, output_dir, final=final_terms)
    step = trainer.global_step
    image = to_pil(cast(torch.Tensor, module.image))
    summary = {
        key: value
        for key, value in flatten(metrics).items()
        if not (isinstance(value, float) and not math.isfinite(value))
    }
    record = find_callback(trainer, RunRecord)
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):  # csv/metrics.csv stays one row per step; metrics.json has these
            logger.log_metrics({f"final/{k}": v for k, v in metrics["final"].items()}, step=step)
        log_image(logger, "final", image, step, caption=f"final, step {step}")
        log_summary(logger, summary, record.config if record else None)
