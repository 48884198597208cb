"""Command-line entry: `python -m src.visualize` (what do the backbone's units respond to?)."""

from __future__ import annotations

from src.cli.entry import hold_interrupts

if __name__ == "__main__":
    hold_interrupts()  # until run_main: Ctrl-C while the libraries load is one line, not a traceback

from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.cli.app import configure, run_app
from src.cli.entry import run_main
from src.units.app import visualize


@hydra.main(config_path="../conf", config_name="visualize", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    configure()  # again in a launcher's worker process, which does not run the lines below
    output_dir = HydraConfig.get().runtime.output_dir
    return run_app(lambda: visualize(cfg, output_dir), output_dir)


if __name__ == "__main__":
    configure()
    run_main(main, "visualize", "src.visualize")
