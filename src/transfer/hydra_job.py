"""What the running Hydra job is: its overrides, which of them a sweep varies, and a name for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from src.render.text import pretty_override


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
        pieces = (
            self.swept
            if self.multirun
            else [
                o
                for o in self.overrides
                if split_override(o)[0].lstrip("+~") != "logger"
                and not split_override(o)[0].lstrip("+~").startswith("logger.")
            ]
        )
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
    num = hydra_cfg.job.get("num")  # type: ignore[attr-defined]  # a DictConfig at run time
    output_dir = hydra_cfg.runtime.get("output_dir")  # type: ignore[attr-defined]
    return JobInfo(
        multirun,
        int(num) if num is not None else None,
        Path(output_dir) if output_dir else None,
        sweep_dir,
        overrides,
        swept,
    )


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
