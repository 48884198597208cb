"""Command-line entry: `python -m src.run style=picasso alpha=1 beta=1e4`."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.errors import UserError
from src.stylize import stylize
from src.sweep import run_sweep_job


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One job of a sweep: a failure is recorded and reported at the end, not raised,
        # so that it stops neither the other jobs nor the sweep's contact sheet.
        return run_sweep_job(stylize, cfg, hydra_cfg.runtime.output_dir)
    try:
        return stylize(cfg, hydra_cfg.runtime.output_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
