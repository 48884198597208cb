"""Command-line entry: `python -m src.visualize` (what do the backbone's units respond to?)."""

from __future__ import annotations

from src.cli.entry import interrupted_while_starting, run_main

try:  # Ctrl-C while the libraries load is one line, not a traceback
    import sys

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from src.cli import run_folder
    from src.common.errors import UserError
    from src.units.app import visualize
except KeyboardInterrupt:
    interrupted_while_starting()


@hydra.main(config_path="../conf", config_name="visualize", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    output_dir = HydraConfig.get().runtime.output_dir
    try:
        return visualize(cfg, output_dir)
    except UserError as error:
        run_folder.discard(output_dir)  # a start that failed leaves no folder behind
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        run_folder.discard(output_dir)
        print("error: interrupted; the grids were not written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_main(main, "visualize", "src.visualize")
