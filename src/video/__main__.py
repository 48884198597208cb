"""Command-line entry: `python -m src.video video.path=clip.mp4 style=starry_night` (docs/video.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import src.paths  # noqa: F401  (registers ${asset:})
import src.video.schema  # noqa: F401  (registers the typed config schema with Hydra)
from src.errors import Interrupted, RunStopped, UserError
from src.paths import resolve_input_path
from src.sweep import run_sweep_job
from src.video.runner import VIDEO_FILE, stylize_video


@hydra.main(config_path="../../conf", config_name="video", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a failed job is recorded, and the sweep goes on
        return run_sweep_job(stylize_video, cfg, hydra_cfg.runtime.output_dir)
    try:
        if cfg.resume:
            return stylize_video(*resumed_run(cfg.resume))
        return stylize_video(cfg, hydra_cfg.runtime.output_dir)
    except (UserError, RunStopped, Interrupted) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; every finished frame is kept (resume=<run dir> continues)", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        sys.exit(2)


def resumed_run(run_dir: str) -> tuple[DictConfig, Path]:
    """The config and folder of an unfinished video run, to continue at its first unfinished frame."""
    folder = resolve_input_path(run_dir)
    saved = folder / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: {folder} is not a run folder (no .hydra/config.yaml)")
    if (folder / VIDEO_FILE).exists():
        raise UserError(f"resume={run_dir}: the run is finished ({folder / VIDEO_FILE})")
    cfg = OmegaConf.load(saved)
    assert isinstance(cfg, DictConfig)
    cfg.resume = None
    return cfg, folder


if __name__ == "__main__":
    main()
