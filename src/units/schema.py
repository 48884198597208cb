"""Typed schema of conf/visualize.yaml (Hydra structured config).

Hydra checks every override against it at start-up: an unknown key (`num_unit=4`), a wrong
type (`k=many`) or a value outside a key's choices (`maximize.optimizer=lbfgs`) is one line
naming the key. Ranges, layer names and unit numbers are checked in src/units/app.py:validate.
The meaning of each key is in the YAML file's comments (shown by `--help`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.transfer.schema import BackboneConfig, DeviceConfig


class AscentOptimizer(StrEnum):
    sgd = "sgd"  # gradient ascent on the gradient scaled to mean magnitude 1
    adam = "adam"


@dataclass
class DataConfig:
    dir: str | None = None
    scales: Any = "auto"  # auto, a size in px, or a list of sizes
    limit: int | None = None
    batch_size: int = 4
    workers: int = 0


@dataclass
class GridConfig:
    min_cell: int = 48
    max_cell: int = 160
    overview_height: int = 720


@dataclass
class MaximizeConfig:
    enabled: bool = False
    steps: int = 200
    optimizer: AscentOptimizer = AscentOptimizer.sgd
    lr: float = 0.05
    margin: int = 4
    jitter: float = 0.5
    blur_every: int = 4
    blur_sigma: float = 0.125
    tv_weight: float = 2.0
    decay: float = 0.01
    noise: float = 0.2
    seed: int = 0


@dataclass
class VisualizeConfig:
    data: DataConfig = field(default_factory=DataConfig)
    layer_names: Any = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
    units: Any = None  # null, a list of units, or a list per layer
    num_units: int = 9
    distinct: float | None = 0.5
    k: int = 9
    per_image: Any = "auto"  # auto, null or a number
    spacing: float = 0.5
    min_inside: float = 1.0
    grid: GridConfig = field(default_factory=GridConfig)
    maximize: MaximizeConfig = field(default_factory=MaximizeConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    logger: Any = MISSING


def register_visualize_schema() -> None:
    """Make the schema known to Hydra as `visualize_schema` (conf/visualize.yaml's first default)."""
    ConfigStore.instance().store(name="visualize_schema", node=VisualizeConfig)
