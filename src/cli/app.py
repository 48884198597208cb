"""What every command-line app does around its work: configure the process once, and turn the
errors a user can act on into one line on stderr and an exit code."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import torch

from src.common.errors import Interrupted, RunStopped, UserError
from src.common.paths import register_resolvers
from src.transfer.schema import register_schema
from src.units.schema import register_visualize_schema


def configure() -> None:
    """Process-wide settings of the apps, in one place: nothing changes them at import time."""
    register_schema()
    register_visualize_schema()
    register_resolvers()
    # Lightning's deterministic=True (CPU runs) turns on torch's deterministic algorithms, which by
    # default also fill every new tensor with NaN, a guard against reading uninitialised memory.
    # Correct ops never do, and the fills cost a few percent of a step; results are unchanged.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    # The frozen backbone is in eval mode on purpose; Lightning's tips about it are noise here.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # conf/hydra/launcher/{joblib,submitit_local}.yaml share their names with the plugins' own
    # configs, so Hydra validates them against the plugins' schemas (wanted) and warns that this
    # matching is deprecated: nothing for a user to do.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/[\w-]+' is validated against ConfigStore schema", category=UserWarning
    )
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)


FILE_ONLY = {"file_only": True}  # a log record for run.log only (the command, the result line)
log = logging.getLogger("src.cli.app")


def keep_file_only_records_off_the_console() -> None:
    """Records logged with extra=FILE_ONLY go to the run's log file, not to the console."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.addFilter(lambda record: not getattr(record, "file_only", False))


def fail(message: str, exit_code: int, output_dir: str | None = None) -> NoReturn:
    """One line on stderr (and in the run's log); a start that failed leaves no folder behind."""
    log.error("error: %s", message, extra=FILE_ONLY)
    if output_dir is not None:
        from src.cli import run_folder

        run_folder.discard(output_dir)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_code)


def run_app(work: Callable[[], Any], output_dir: str | None = None) -> Any:
    """`work()`, with the errors a user can act on reported as one line and an exit code:
    2 for bad input, 3 for a run stopped by a NaN, 128 + signal after an interrupt.
    `output_dir`: the folder Hydra made for the run, removed if the start failed."""
    keep_file_only_records_off_the_console()
    log.info(
        "python -m %s %s", sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py"), " ".join(sys.argv[1:]), extra=FILE_ONLY
    )
    try:
        return work()
    except (UserError, RunStopped, Interrupted) as error:
        fail(str(error), error.exit_code, output_dir)
    except KeyboardInterrupt:
        fail("interrupted before the optimisation started; nothing to save", 130, output_dir)
    except OSError as error:
        # An unwritable output folder, a full disk, ...: say which file and why.
        fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), 2, output_dir)
