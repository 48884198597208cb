"""Command-line entry: `python -m src.run style=picasso alpha=1 beta=1e4`."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.cli.app import configure, run_app
from src.sweeps.job import run_sweep_job
from src.transfer.resume import resumed_run
from src.transfer.runner import stylize


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    configure()  # again in a launcher's worker process, which does not run the lines below
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One job of a sweep: a failure is recorded and reported at the end, not raised,
        # so that it stops neither the other jobs nor the sweep's contact sheet.
        return run_sweep_job(stylize, cfg, hydra_cfg.runtime.output_dir)
    if cfg.resume:
        names_device = any(o.lstrip("+~").startswith("device") for o in hydra_cfg.overrides.task)
        return run_app(lambda: stylize(*resumed_run(cfg.resume, cfg.device if names_device else None)))
    return run_app(lambda: stylize(cfg, hydra_cfg.runtime.output_dir))


if __name__ == "__main__":
    configure()
    main()
