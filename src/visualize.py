"""Command-line entry: `python -m src.visualize` (what do the backbone's units respond to?)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.cli.argv import prepare_argv
from src.errors import UserError
from src.unit_visualization import visualize


@hydra.main(config_path="../conf", config_name="visualize", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    try:
        return visualize(cfg, HydraConfig.get().runtime.output_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    prepare_argv("visualize")  # --help; file names quoted for Hydra
    main()
