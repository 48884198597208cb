"""Multirun sweeps: every job keeps going when one fails, and the sweep ends with a report.

* `run_sweep_job` wraps one job of a sweep: a failure is recorded in the job's `job.json`
  (and its log) instead of ending the sweep.
* `SweepReport` is a Hydra callback (see `hydra.callbacks` in conf/config.yaml): when the
  sweep ends it writes `contact_sheet.png` and `summary.csv` into the sweep folder.
* `python -m src.sweep <sweep folder>` writes them again, e.g. for a SLURM sweep whose
  submitting process was stopped before the jobs ended.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.render.contact_sheet import Cell, SheetLayout, draw_contact_sheet, short_number

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
SHEET_FILE = "contact_sheet.png"
SUMMARY_FILE = "summary.csv"

# conf/hydra/launcher/{joblib,submitit_local}.yaml are complete launcher configs that share their
# names with the plugins' own; Hydra then validates them against the plugin's schema (which we
# want) and warns that this "automatic schema matching" is deprecated. Nothing for a user to do.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/[\w-]+' is validated against ConfigStore schema",
                        category=UserWarning)


# -- naming --------------------------------------------------------------------------------


def pretty_value(value: str) -> str:
    """Hydra turns `1e3` into `1000.0`; show floats the short way again (1e3, 0.5, 2.5e4)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if not any(c in value for c in ".eE") or value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return value
    plain = f"{number:g}"
    mantissa, exponent = f"{number:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    scientific = f"{mantissa}e{int(exponent)}"
    if "e" in plain:
        return scientific
    return scientific if len(scientific) < len(plain) else plain


def pretty_override(override: str) -> str:
    key, sep, value = override.partition("=")
    return f"{key}={pretty_value(value)}" if sep else override


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


@dataclass
class JobInfo:
    """What the running job is: its overrides, and which of them the sweep varies."""

    multirun: bool
    num: int | None
    output_dir: Path | None
    sweep_dir: Path | None
    overrides: list[str]
    swept: list[str]

    @property
    def name(self) -> str | None:
        """A run name made of the overrides that tell this job from the others."""
        pieces = self.swept if self.multirun else [
            o for o in self.overrides if split_override(o)[0].lstrip("+~") != "logger"
            and not split_override(o)[0].lstrip("+~").startswith("logger.")]
        if not pieces:
            return f"job {self.num}" if self.multirun else None
        return ",".join(pretty_override(p) for p in pieces)[:128]

    @property
    def group(self) -> str | None:
        """The sweep folder, relative to where the command was run when it is below it."""
        if not self.multirun or self.sweep_dir is None:
            return None
        try:
            return str(self.sweep_dir.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(self.sweep_dir)


def current_job() -> JobInfo:
    """Describe the Hydra job running now (a plain single run when Hydra is not running)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            raise LookupError
        hydra_cfg = HydraConfig.get()
    except (ImportError, LookupError, ValueError):
        return JobInfo(False, None, None, None, [], [])
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    sweep_dir = Path(str(hydra_cfg.sweep.dir)) if multirun else None
    swept: list[str] = []
    if multirun:
        axes = read_axes(sweep_dir)
        keys = [key for key, _ in axes] if axes is not None else [split_override(o)[0] for o in overrides]
        swept = [o for o in overrides if split_override(o)[0] in keys]
    num = hydra_cfg.job.get("num")
    output_dir = hydra_cfg.runtime.get("output_dir")
    return JobInfo(multirun, int(num) if num is not None else None, Path(output_dir) if output_dir else None,
                   sweep_dir, overrides, swept)


# -- one job of a sweep --------------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_sweep_job(task: Callable[[DictConfig, Path], dict], cfg: DictConfig, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Run one job of a multirun sweep; a failure is recorded, logged and returned, not raised.

    Hydra's sweepers stop a whole sweep when a job raises (and a SystemExit stops it at once),
    so the other jobs' results and the sweep report would be lost.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    job = current_job()
    record: dict[str, Any] = {"num": job.num, "overrides": job.overrides, "status": "running",
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(output_dir / JOB_FILE, record)
    started = time.perf_counter()
    try:
        metrics = task(cfg, output_dir)
        record["status"] = "completed"
        return metrics
    except Exception as error:
        message = describe_error(error)
        record.update(status="failed", error=message, traceback=traceback.format_exc())
        log.error("job %s (%s) failed: %s", job.num, job.name or "no overrides", message,
                  exc_info=not isinstance(error, UserError))
        return {"status": "failed", "error": message}
    except BaseException as error:  # Ctrl-C, SystemExit: stop the sweep, but say so in the record
        record.update(status="interrupted", error=describe_error(error))
        raise
    finally:
        record["wall_seconds"] = time.perf_counter() - started
        write_json(output_dir / JOB_FILE, record)


# -- reading a finished sweep --------------------------------------------------------------


@dataclass
class JobResult:
    num: int
    directory: Path | None
    overrides: list[str]
    status: str                       # completed | failed | no result | not run
    error: str = ""
    metrics: dict[str, Any] | None = None
    wall_seconds: float | None = None
    position: tuple[int, int] = (0, 0)

    @property
    def values(self) -> dict[str, str]:
        return dict(split_override(o) for o in self.overrides)

    @property
    def final_image(self) -> Path | None:
        if self.status != "completed" or self.directory is None:
            return None
        path = self.directory / "final.png"
        return path if path.is_file() else None


@dataclass
class Sweep:
    directory: Path
    axes: list[tuple[str, list[str]]]
    fixed: list[str]
    jobs: list[JobResult] = field(default_factory=list)

    @property
    def failed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status != "completed"]


def read_axes(sweep_dir: Path | None) -> list[tuple[str, list[str] | None]] | None:
    """The swept parameters [(key, values)] from the sweep's multirun.yaml, in command-line order.

    Values are None where Hydra needs its config loader to expand them (glob); None overall
    when there is no multirun.yaml to read.
    """
    parsed = read_sweep_arguments(sweep_dir)
    return None if parsed is None else parsed[0]


def read_sweep_arguments(sweep_dir: Path | None) -> tuple[list[tuple[str, list[str] | None]], list[str]] | None:
    if sweep_dir is None or not (Path(sweep_dir) / "multirun.yaml").is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
    arguments = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + arguments
    axes: dict[str, list[str] | None] = {}
    fixed: dict[str, str] = {}
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # an exotic override: fall back to reading the jobs
        return None
    for override in overrides:
        key = override.get_key_element()
        if override.is_hydra_override():
            continue
        if override.is_sweep_override():
            try:
                axes[key] = [str(v) for v in override.sweep_string_iterator()]
            except Exception:
                axes[key] = None
            fixed.pop(key, None)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
            axes.pop(key, None)
    return list(axes.items()), list(fixed.values())


def job_directories(sweep_dir: Path) -> list[Path]:
    found = {p.parent.parent for pattern in ("*/.hydra/overrides.yaml", "*/*/.hydra/overrides.yaml")
             for p in sweep_dir.glob(pattern)}
    return sorted(found)


def read_job(directory: Path) -> JobResult:
    overrides = [str(o) for o in OmegaConf.load(directory / ".hydra" / "overrides.yaml")]
    record: dict[str, Any] = {}
    if (directory / JOB_FILE).is_file():
        try:
            record = json.loads((directory / JOB_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
    num = record.get("num")
    if num is None:
        try:
            num = OmegaConf.select(OmegaConf.load(directory / ".hydra" / "hydra.yaml"), "hydra.job.num")
        except Exception:
            num = None
    if num is None:
        num = int(directory.name) if directory.name.isdigit() else -1
    metrics = None
    if (directory / "metrics.json").is_file():
        try:
            metrics = json.loads((directory / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            metrics = None
    status = record.get("status")
    if status == "completed" or (status is None and metrics is not None and (directory / "final.png").is_file()):
        status = "completed" if metrics is not None else "no result"
    elif status == "failed":
        status = "failed"
    else:  # still "running" at the end of the sweep: the job was killed (timeout, out of memory...)
        status = "no result"
    error = record.get("error", "")
    if status == "no result" and not error:
        error = f"the job stopped without finishing (last state: {record.get('status', 'unknown')}); see its log"
    wall = record.get("wall_seconds")
    return JobResult(int(num), directory, overrides, status, error, metrics if status == "completed" else None,
                     float(wall) if wall is not None else None)


def read_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    """Every job of a sweep folder, each placed on the grid of swept parameters."""
    sweep_dir = Path(sweep_dir)
    jobs = [read_job(d) for d in job_directories(sweep_dir)]
    parsed = read_sweep_arguments(sweep_dir)
    if parsed is not None:
        declared, fixed = parsed
    else:  # no multirun.yaml: the swept keys are those whose value differs between jobs
        keys: list[str] = []
        for job in sorted(jobs, key=lambda j: j.num):
            keys += [k for k in job.values if k not in keys]
        declared = [(k, None) for k in keys if len({job.values.get(k) for job in jobs}) > 1]
        common = [k for k in keys if (k, None) not in declared]
        fixed = [f"{k}={jobs[0].values[k]}" for k in common if k in jobs[0].values]
    axes: list[tuple[str, list[str]]] = []
    for key, values in declared:
        if values is None:  # fill from the jobs, in job order
            values = []
            for job in sorted(jobs, key=lambda j: j.num):
                value = job.values.get(key)
                if value is not None and value not in values:
                    values.append(value)
        axes.append((key, list(values)))
    # jobs whose value is not on an axis (e.g. stale folders from an earlier sweep) still show up
    for job in jobs:
        for key, values in axes:
            value = job.values.get(key)
            if value is not None and value not in values:
                values.append(value)
    shape = [len(values) for _, values in axes]
    placed: dict[tuple[int, ...], JobResult] = {}
    for job in sorted(jobs, key=lambda j: j.num):
        index = tuple(values.index(job.values[key]) if key in job.values else 0 for key, values in axes)
        earlier = placed.get(index)
        if earlier is None or job_time(job) >= job_time(earlier):
            placed[index] = job
    results = []
    for number, index in enumerate(itertools.product(*[range(n) for n in shape])):
        job = placed.get(index)
        if job is None:
            overrides = [f"{key}={values[i]}" for (key, values), i in zip(axes, index)]
            job = JobResult(number, None, overrides, "not run", "no job folder for these overrides")
        job.position = grid_position(index, shape)
        results.append(job)
    return Sweep(sweep_dir, axes, fixed, sorted(results, key=lambda j: (j.num, j.position)))


def job_time(job: JobResult) -> float:
    path = job.directory / JOB_FILE if job.directory else None
    return path.stat().st_mtime if path is not None and path.is_file() else 0.0


def grid_position(index: Sequence[int], shape: Sequence[int]) -> tuple[int, int]:
    """(row, col) of a job: the last swept parameter is the column, the others make up the row."""
    if not shape:
        return 0, 0
    row = 0
    for i, n in zip(index[:-1], shape[:-1]):
        row = row * n + i
    return row, index[-1]


# -- the report ----------------------------------------------------------------------------


def sheet_title(sweep: Sweep) -> str:
    try:
        where = str(sweep.directory.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        where = str(sweep.directory)
    counts = f"{len(sweep.jobs)} job{'s' if len(sweep.jobs) != 1 else ''}"
    if sweep.failed:
        statuses = [job.status for job in sweep.jobs]
        counts += ": " + ", ".join(f"{statuses.count(s)} {s.upper() if s == 'failed' else s}"
                                  for s in ("completed", "failed", "no result", "not run") if s in statuses)
    title = f"Sweep {where} — {counts}"
    if sweep.fixed:
        title += "\n" + "fixed: " + "  ".join(pretty_override(o) for o in sweep.fixed)
    return title


def cells(sweep: Sweep) -> dict[tuple[int, int], Cell]:
    from PIL import Image

    result = {}
    for job in sweep.jobs:
        wall = f" · {job.wall_seconds:.1f} s" if job.wall_seconds is not None else ""
        image = None
        if job.final_image is not None:
            with Image.open(job.final_image) as opened:
                image = opened.convert("RGB")
        if job.status == "completed" and image is not None:
            final = (job.metrics or {}).get("final", {})
            caption = [f"job {job.num}{wall}", f"loss {short_number(final.get('total'))}"]
            result[job.position] = Cell("completed", image, caption)
        else:
            status = job.status if job.status != "completed" else "no result"
            caption = [f"job {job.num}" + (f"{wall}" if job.directory else ""), status]
            result[job.position] = Cell(status, None, caption, job.error)
    return result


def contact_sheet(sweep: Sweep) -> tuple[Any, SheetLayout]:
    """The sheet image and its layout (rows and columns as laid out by the swept parameters)."""
    axes = [(key, [pretty_value(v) for v in values]) for key, values in sweep.axes]
    return draw_contact_sheet(axes, cells(sweep), sheet_title(sweep))


LOSS_KEYS = ("total", "content", "style", "tv")


def summary_rows(sweep: Sweep) -> tuple[list[str], list[dict[str, Any]]]:
    layers: list[str] = []
    for job in sweep.jobs:
        for layer in ((job.metrics or {}).get("final_style_layers") or {}):
            if layer not in layers:
                layers.append(layer)
    columns = ["job", "status", *[key for key, _ in sweep.axes], "overrides",
               *[f"final_{key}" for key in LOSS_KEYS], *[f"final_style_{layer}" for layer in layers],
               "initial_total", "steps", "wall_seconds", "train_seconds", "seconds_per_step",
               "width", "height", "sheet_row", "sheet_col", "folder", "error"]
    rows = []
    for job in sweep.jobs:
        metrics = job.metrics or {}
        final = metrics.get("final") or {}
        row: dict[str, Any] = {
            "job": job.num, "status": job.status,
            **{key: job.values.get(key, "") for key, _ in sweep.axes},
            "overrides": " ".join(job.overrides),
            **{f"final_{key}": final.get(key, "") for key in LOSS_KEYS},
            **{f"final_style_{layer}": (metrics.get("final_style_layers") or {}).get(layer, "") for layer in layers},
            "initial_total": (metrics.get("initial") or {}).get("total", ""),
            "steps": metrics.get("steps", ""),
            "wall_seconds": f"{job.wall_seconds:.3f}" if job.wall_seconds is not None else "",
            "train_seconds": metrics.get("wall_seconds", ""),
            "seconds_per_step": metrics.get("seconds_per_step", ""),
            "width": metrics.get("width", ""), "height": metrics.get("height", ""),
            "sheet_row": job.position[0], "sheet_col": job.position[1],
            "folder": str(job.directory) if job.directory else "",
            "error": job.error,
        }
        rows.append(row)
    return columns, rows


def write_report(sweep_dir: str | os.PathLike) -> Sweep:
    """Write contact_sheet.png and summary.csv into a sweep folder; returns what was read."""
    sweep = read_sweep(sweep_dir)
    columns, rows = summary_rows(sweep)
    summary = sweep.directory / SUMMARY_FILE
    with open(summary.with_name(SUMMARY_FILE + ".tmp"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(summary.with_name(SUMMARY_FILE + ".tmp"), summary)
    sheet, _ = contact_sheet(sweep)
    temporary = sweep.directory / (SHEET_FILE + ".tmp")
    sheet.save(temporary, format="PNG")
    os.replace(temporary, sweep.directory / SHEET_FILE)
    return sweep


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, the contact sheet and the summary table.

    When a job failed, the sweep still reports every job and then exits with `failed_exit_code`.
    """

    def __init__(self, failed_exit_code: int = 1) -> None:
        self.failed_exit_code = failed_exit_code

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            sweep = write_report(sweep_dir)
        except Exception as error:  # the jobs' own results are all in place; say what went wrong
            log.exception("could not write the sweep report")
            print(f"error: could not write {sweep_dir / SHEET_FILE} and {SUMMARY_FILE}: {error}; "
                  f"retry with `python -m src.sweep {sweep_dir}`", file=sys.stderr)
            sys.exit(1)
        done = len(sweep.jobs) - len(sweep.failed)
        log.info("sweep finished: %d of %d jobs completed; %s, %s", done, len(sweep.jobs),
                 sweep_dir / SHEET_FILE, sweep_dir / SUMMARY_FILE)
        if sweep.failed:
            names = "; ".join(f"job {job.num} ({','.join(pretty_override(o) for o in job.overrides if split_override(o)[0] in dict(sweep.axes)) or '-'}): {job.status}"
                              for job in sweep.failed)
            print(f"error: {len(sweep.failed)} of {len(sweep.jobs)} jobs did not complete: {names}. "
                  f"See {sweep_dir / SUMMARY_FILE}", file=sys.stderr)
            if self.failed_exit_code:
                sys.exit(self.failed_exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m src.sweep <sweep folder>...`: write the sweep report again."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m src.sweep SWEEP_FOLDER [SWEEP_FOLDER...]\n"
              "Write contact_sheet.png and summary.csv for finished (or partly finished) sweeps.")
        return 0 if argv else 2
    status = 0
    for folder in argv:
        if not (Path(folder) / "multirun.yaml").is_file() and not job_directories(Path(folder)):
            print(f"error: {folder} is not a sweep folder (no multirun.yaml, no job folders)", file=sys.stderr)
            status = 2
            continue
        sweep = write_report(folder)
        print(f"{Path(folder) / SHEET_FILE}, {Path(folder) / SUMMARY_FILE}: "
              f"{len(sweep.jobs) - len(sweep.failed)} of {len(sweep.jobs)} jobs completed")
    return status

