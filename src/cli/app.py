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


def configure() -> None:
    """Process-wide settings of the apps, in one place: nothing changes them at import time."""
    register_schema()
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
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/[\w-]+' is validated against ConfigStore schema",
                            category=UserWarning)
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, exit_code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_code)


def run_app(work: Callable[[], Any]) -> Any:
    """`work()`, with the errors a user can act on reported as one line and an exit code:
    2 for bad input, 3 for a run stopped by a NaN, 128 + signal after an interrupt."""
    try:
        return work()
    except (UserError, RunStopped, Interrupted) as error:
        fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        fail("interrupted before the optimisation started; nothing to save", 130)
    except OSError as error:
        # An unwritable output folder, a full disk, ...: say which file and why.
        fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), 2)
