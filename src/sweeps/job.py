"""Multirun sweeps: every job keeps going when one fails, and the sweep ends with a report.

* `run_sweep_job` wraps one job of a sweep: a failure is recorded in the job's `job.json`
  (and its log) instead of ending the sweep.
* `SweepReport` is a Hydra callback (see `hydra.callbacks` in conf/config.yaml): when the
  sweep ends it writes `contact_sheet.png` and `summary.csv` into the sweep folder.
* `python -m src.sweep <sweep folder>` writes them again, e.g. for a SLURM sweep whose
  submitting process was stopped before the jobs ended.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.common.errors import UserError
from src.common.files import write_json
from src.sweeps.read import JOB_FILE
from src.transfer.hydra_job import current_job

log = logging.getLogger(__name__)


def describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_sweep_job(
    task: Callable[[DictConfig, Path], dict], cfg: DictConfig, output_dir: str | os.PathLike
) -> dict[str, Any]:
    """Run one job of a multirun sweep; a failure is recorded, logged and returned, not raised.

    Hydra's sweepers stop a whole sweep when a job raises (and a SystemExit stops it at once),
    so the other jobs' results and the sweep report would be lost.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    job = current_job()
    record: dict[str, Any] = {
        "num": job.num,
        "overrides": job.overrides,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(output_dir / JOB_FILE, record)
    started = time.perf_counter()
    try:
        metrics = task(cfg, output_dir)
        record["status"] = "completed"
        return metrics
    except Exception as error:
        message = describe_error(error)
        record.update(status="failed", error=message, traceback=traceback.format_exc())
        log.error(
            "job %s (%s) failed: %s",
            job.num,
            job.name or "no overrides",
            message,
            exc_info=not isinstance(error, UserError),
        )
        return {"status": "failed", "error": message}
    except BaseException as error:  # Ctrl-C, SystemExit: stop the sweep, but say so in the record
        record.update(status="interrupted", error=describe_error(error))
        raise
    finally:
        record["wall_seconds"] = time.perf_counter() - started
        write_json(output_dir / JOB_FILE, record)
