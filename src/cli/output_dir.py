"""A Hydra callback that makes the output folder before Hydra does, so that an unwritable
`hydra.run.dir` (or `hydra.sweep.dir`) is one line and exit code 2 instead of a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def make_output_dir(path: str, key: str) -> None:
    # Hydra's ${now:...} is cached, so this is the very folder Hydra will use.
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: {key}={path}: cannot create the output folder ({error.strerror or error})", file=sys.stderr)
        raise SystemExit(2) from None


class OutputDirCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_output_dir(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_output_dir(str(config.hydra.sweep.dir), "hydra.sweep.dir")
