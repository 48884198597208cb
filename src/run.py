"""Command-line entry: `python -m src.run style=picasso alpha=1 beta=1e4`."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.errors import Interrupted, RunStopped, UserError
from src.faults import checkpoint_path
from src.paths import resolve_input_path
from src.stylize import LEVELS_DIR, stylize
from src.sweep import run_sweep_job


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One job of a sweep: a failure is recorded and reported at the end, not raised,
        # so that it stops neither the other jobs nor the sweep's contact sheet.
        return run_sweep_job(stylize, cfg, hydra_cfg.runtime.output_dir)
    try:
        if cfg.resume:
            names_device = any(o.lstrip("+~").startswith("device") for o in hydra_cfg.overrides.task)
            return stylize(*resumed_run(cfg.resume, cfg.device if names_device else None))
        return stylize(cfg, hydra_cfg.runtime.output_dir)
    except (UserError, RunStopped, Interrupted) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted before the optimisation started; nothing to save", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        # Unwritable output folder, full disk, ...: say which file and why.
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        sys.exit(2)


def resumed_run(run_dir: str, device: DictConfig | None = None) -> tuple[DictConfig, Path]:
    """The config and folder of an interrupted run, to continue it to its requested steps;
    on `device` if given (the command named one: a GPU run continued on a CPU, say)."""
    folder = resolve_input_path(run_dir)
    saved = folder / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: {folder} is not a run folder (no .hydra/config.yaml)")
    if not checkpoint_path(folder).is_file() and not (folder / LEVELS_DIR).is_dir():
        raise UserError(f"resume={run_dir}: {folder} has no checkpoint to continue from ({checkpoint_path(folder)})")
    cfg = OmegaConf.load(saved)
    cfg.resume = None
    if device is not None:
        cfg.device = device
    return cfg, folder


if __name__ == "__main__":
    main()
