"""Command-line entry: `python -m src.run style=picasso alpha=1 beta=1e4`."""

from __future__ import annotations

from src.cli.entry import interrupted_while_starting, run_main

try:  # Ctrl-C while the libraries load is one line, not a traceback
    import logging
    import sys
    from typing import Any

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from src.cli import run_folder
    from src.common.errors import Interrupted, RunStopped, UserError
    from src.sweeps.job import run_sweep_job
    from src.transfer.resume import resumed_run
    from src.transfer.runner import stylize
except KeyboardInterrupt:
    interrupted_while_starting()

log = logging.getLogger("src.run")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One job of a sweep: a failure is recorded and reported at the end, not raised,
        # so that it stops neither the other jobs nor the sweep's contact sheet.
        return run_sweep_job(stylize, cfg, hydra_cfg.runtime.output_dir)
    output_dir = hydra_cfg.runtime.output_dir
    keep_file_only_records_off_the_console()
    log.info("python -m src.run %s", " ".join(sys.argv[1:]), extra=FILE_ONLY)
    try:
        resuming = bool(cfg.resume)
        if resuming:
            cfg, folder = resumed_run(cfg, [str(o) for o in hydra_cfg.overrides.task])
        else:
            folder = output_dir
        metrics = stylize(cfg, folder, resuming=resuming)
    except (UserError, RunStopped, Interrupted) as error:
        fail(str(error), error.exit_code, output_dir)
    except KeyboardInterrupt:
        fail("interrupted before the optimisation started; nothing to save", 130, output_dir)
    except OSError as error:
        # Unwritable output folder, full disk, ...: say which file and why.
        fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), 2, output_dir)
    print(metrics["result_line"])
    return metrics


FILE_ONLY = {"file_only": True}


def keep_file_only_records_off_the_console() -> None:
    """Records logged with extra=FILE_ONLY (the command, the result line) go to run.log only."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.addFilter(lambda record: not getattr(record, "file_only", False))


def fail(message: str, exit_code: int, output_dir: str) -> None:
    """One line on stderr (and in run.log); a start that failed leaves no folder behind."""
    log.error("error: %s", message, extra=FILE_ONLY)
    run_folder.discard(output_dir)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_code)


if __name__ == "__main__":
    run_main(main, "config", "src.run")
