"""The Lightning Trainer of a run: its settings, the fit wrapper, the one-batch-per-step loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.common.devices import target_device
from src.common.errors import UserError
from src.transfer.checkpoints import StopOnSignal
from src.transfer.module import StyleTransfer


def trainer_settings(cfg: DictConfig, steps: int, output_dir: Path) -> dict[str, Any]:
    """What every Trainer of a run shares: `steps` steps on one device, nothing else."""
    device = target_device(cfg.device.accelerator)
    on_cuda = device.type == "cuda"
    return dict(
        accelerator=device.type,  # what `auto` means here, which Lightning's would not (it picks MPS first)
        devices=1,
        precision=cfg.device.precision,
        max_epochs=-1,  # until max_steps, also when resuming a stopped epoch
        max_steps=steps,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir),
        deterministic=not on_cuda,  # bit-for-bit on the CPU (tested); free on the GPU
        benchmark=on_cuda,  # the image's size is fixed: let cuDNN pick its fastest convolutions
    )


def make_trainer(cfg: DictConfig, output_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    logger = instantiate(cfg.logger, save_dir=str(output_dir)) if cfg.logger.get("_target_") else False
    return pl.Trainer(
        **trainer_settings(cfg, cfg.steps, output_dir), logger=logger, callbacks=callbacks, log_every_n_steps=1
    )


def fit(trainer: pl.Trainer, module: StyleTransfer, steps: int, resume_from: Path | None = None) -> None:
    """trainer.fit, leaving the module on the run's device: Lightning's teardown moves it to
    the CPU, also after an error, where the final evaluation would be slow on a big image.
    The trainer's StopOnSignal takes Ctrl-C and SIGTERM from before Lightning's setup."""
    stop = next((c for c in trainer.callbacks if isinstance(c, StopOnSignal)), None)  # type: ignore[attr-defined]
    if stop is not None:
        stop.install(trainer)
    try:
        trainer.fit(module, train_dataloaders=steps_loader(steps), ckpt_path=resume_from)
    except torch.OutOfMemoryError as error:  # the GPU's: the estimate (src/transfer/memory.py) let it start
        height, width = module.image.shape[-2:]  # (the module is not used again: left on the CPU)
        raise UserError(f"a {width}x{height} px run ran out of GPU memory; choose a smaller size") from error
    except BaseException:
        module.to(trainer.strategy.root_device)  # a NaN's last_good.png is evaluated next
        raise
    finally:
        if stop is not None:
            stop.restore()
    module.to(trainer.strategy.root_device)


class StepsLoader(torch.utils.data.DataLoader):
    """One dummy batch per optimiser step: the image itself is the only 'data'.

    Resumable (the state_dict interface) because its batches hold nothing to resume: this
    tells Lightning so, instead of its warning about unreliable results."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def steps_loader(steps: int) -> torch.utils.data.DataLoader:
    return StepsLoader(torch.utils.data.TensorDataset(torch.zeros(steps)), batch_size=1)
