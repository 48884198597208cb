"""Losing nothing: periodic checkpoints, and a clean stop on Ctrl-C or SIGTERM.

A checkpoint is a Lightning checkpoint (the image, the optimiser's state, the loop's
progress; not the frozen backbone) at <run dir>/checkpoints/last.ckpt, replaced
atomically so a kill while writing never leaves a broken file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl

from src.common.files import atomic_path

CHECKPOINT_NAME = "last.ckpt"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def save_checkpoint(trainer: pl.Trainer, run_dir: str | os.PathLike) -> Path:
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        trainer.save_checkpoint(temporary)
    return path


class Checkpointer(pl.Callback):
    """Write checkpoints/last.ckpt every `every` optimiser steps (0 = only on a stop)."""

    def __init__(self, every: int, run_dir: str | os.PathLike) -> None:
        self.every = every
        self.run_dir = Path(run_dir)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step < trainer.max_steps:
            save_checkpoint(trainer, self.run_dir)


class StopOnSignal(pl.Callback):
    """First Ctrl-C or SIGTERM: finish the current step, then stop (the caller saves).

    A second Ctrl-C interrupts at once. `src.transfer.trainer.fit` installs the handlers before
    Lightning's setup (which would end the process with exit code 1 on a Ctrl-C) and restores
    them after; they are installed again when training starts, replacing Lightning's own
    SIGTERM handling.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        if self._trainer is not None:
            self._trainer.should_stop = True

    def install(self, trainer: pl.Trainer) -> None:
        """Take Ctrl-C and SIGTERM from now on, for `trainer`; a signal already received stops it
        before its first step."""
        self._trainer = trainer
        for signum in self.SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)  # the handlers from before the first install
        if self.received is not None:
            trainer.should_stop = True

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.install(trainer)  # again: Lightning's setup has put its own SIGTERM handler in place

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
