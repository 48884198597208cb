"""The progress bar of a run: one line that fits an 80-column terminal.

    level 2/3 · 240/300 |██████      | 00:41 left, loss 8.4e8 (c 5.9e7 s 7.9e8 tv 1.2e5)

Steps done and requested (a resumed run starts where it stopped), the time left, and the
loss terms of the last step in a short number form; a coarse-to-fine run names its level.
Lightning's own bar says `Epoch 0`, shows logger versions (`v_num`) and cuts the loss
terms off at 80 columns.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from tqdm import tqdm

MAX_COLUMNS = 80
BAR_FORMAT = "{desc}{n_fmt}/{total_fmt} |{bar}| {remaining} left{postfix}"
TERMS = (("content", "c"), ("style", "s"), ("tv", "tv"))


def short_number(value: float) -> str:
    """2 significant digits, exponent without padding: 8.4e8, 0.012, 0."""
    if value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def compact_terms(latest: dict[str, float]) -> str:
    """`loss 8.4e8 (c 5.9e7 s 7.9e8)`: the total and its non-zero terms."""
    if "loss/total" not in latest:
        return ""
    parts = [
        f"{short} {short_number(latest[f'loss/{key}'])}"
        for key, short in TERMS
        if latest.get(f"loss/{key}", 0.0) != 0.0
    ]
    inner = f" ({' '.join(parts)})" if parts else ""
    return f"loss {short_number(latest['loss/total'])}{inner}"


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting optimiser steps of the whole run, in at most 80 columns.

    `label` (e.g. `level 2/3`) is shown first; the loss terms come from the run's LossHistory.
    """

    def __init__(self, label: str = "") -> None:
        super().__init__()
        self.label = label

    def columns(self) -> int:
        return min(MAX_COLUMNS, shutil.get_terminal_size((MAX_COLUMNS, 24)).columns) - 1

    def init_train_tqdm(self, total: int | None = None, initial: int = 0) -> tqdm:
        # `initial`: a resumed run starts where it stopped, and the time left is of what is left
        return tqdm(
            desc=f"{self.label} · " if self.label else "",
            total=total,
            initial=initial,
            ncols=self.columns(),
            file=sys.stdout,
            bar_format=BAR_FORMAT,
            disable=self.is_disabled,
            leave=True,
            smoothing=0.3,
            dynamic_ncols=False,
        )

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm(trainer.max_steps, trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole run, not one per epoch

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        from src.transfer.callbacks import LossHistory, find_callback

        history = find_callback(trainer, LossHistory)
        terms = compact_terms(history.latest if history else {})
        bar.n = trainer.global_step
        bar.set_postfix_str(terms, refresh=False)  # tqdm puts ", " before it
        bar.refresh()

    def on_train_epoch_end(self, *_: Any) -> None:
        pass
