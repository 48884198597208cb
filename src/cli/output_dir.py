"""A Hydra callback that claims the output folder before Hydra writes into it: an unwritable
`hydra.run.dir` (or `hydra.sweep.dir`) is one line and exit code 2 instead of a traceback, and
a folder that another run is using is refused (src/cli/run_folder.py)."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.cli import run_folder
from src.common.errors import UserError


def make_output_dir(path: str, key: str) -> None:
    # Hydra's ${now:...} is cached, so this is the very folder Hydra will use.
    try:
        run_folder.claim(path, key)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


class OutputDirCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_output_dir(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_output_dir(str(config.hydra.sweep.dir), "hydra.sweep.dir")
