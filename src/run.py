"""Command-line entry: `python -m src.run style=picasso alpha=1 beta=1e4`."""

from __future__ import annotations

from src.cli.entry import hold_interrupts

if __name__ == "__main__":
    hold_interrupts()  # until run_main: Ctrl-C while the libraries load is one line, not a traceback

from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.cli.app import configure, run_app
from src.cli.entry import run_main
from src.sweeps.job import run_sweep_job
from src.transfer.distributed import follow_launched, launched_follower
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
    output_dir = hydra_cfg.runtime.output_dir

    def work() -> dict[str, Any]:
        if cfg.resume:  # in the run's own folder (src/cli/argv.py), with the overrides it may take
            resumed, folder = resumed_run(cfg, [str(o) for o in hydra_cfg.overrides.task])
            return stylize(resumed, folder, resuming=True)
        return stylize(cfg, output_dir)

    metrics = run_app(work, output_dir)
    print(metrics["result_line"])
    return metrics


if __name__ == "__main__":
    configure()
    if launched_follower():  # torchrun's rank > 0: it computes tiles for rank 0's run
        follow_launched()
    run_main(main, "config", "src.run")
