"""Command-line entry: `python -m src.video video.path=clip.mp4 style=starry_night` (docs/video.md)."""

from __future__ import annotations

from src.cli.entry import hold_interrupts

if __name__ == "__main__":
    hold_interrupts()  # until run_main: Ctrl-C while the libraries load is one line, not a traceback

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.cli.app import configure, run_app
from src.cli.entry import run_main
from src.common.errors import UserError
from src.common.paths import resolve_input_path
from src.sweeps.job import run_sweep_job
from src.video.runner import VIDEO_FILE, stylize_video
from src.video.schema import register_video_schema


def configure_video() -> None:
    configure()
    register_video_schema()


@hydra.main(config_path="../../conf", config_name="video", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    configure_video()  # again in a launcher's worker process, which does not run the lines below
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a failed job is recorded, and the sweep goes on
        return run_sweep_job(stylize_video, cfg, hydra_cfg.runtime.output_dir)
    if cfg.resume:
        return run_app(lambda: stylize_video(*resumed_run(cfg.resume)))
    return run_app(lambda: stylize_video(cfg, hydra_cfg.runtime.output_dir))


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
    configure_video()
    run_main(main, "video", "src.video")
