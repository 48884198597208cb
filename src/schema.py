"""Typed schema of conf/config.yaml (Hydra structured config).

Hydra checks every override against it: an unknown key (`bta=1e4`) or a wrong type
(`size=big`) fails at start-up with a message naming the key. Checks that types cannot
express (ranges, layer names, choices) are in src/stylize.py:validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ImageConfig:
    path: str = MISSING


@dataclass
class LayersConfig:
    content: Dict[str, float] = field(default_factory=dict)
    style: Dict[str, float] = field(default_factory=dict)


@dataclass
class InitConfig:
    kind: str = "content"  # noise | content | style | image
    path: Optional[str] = None


@dataclass
class BackboneConfig:
    weights: str = "caffe"  # caffe | torchvision
    pooling: str = "max"  # max | avg
    weights_path: Optional[str] = None


@dataclass
class DeviceConfig:
    accelerator: str = "auto"  # cpu | gpu | auto
    precision: str = "32-true"


@dataclass
class StyleTransferConfig:
    content: ImageConfig = field(default_factory=ImageConfig)
    style: ImageConfig = field(default_factory=ImageConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)
    optimizer: Any = MISSING  # a torch.optim class, `_partial_` instantiated (lbfgs, adam)
    init: InitConfig = field(default_factory=InitConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    logger: Any = MISSING
    alpha: float = 1.0
    beta: float = 1.0e4
    tv_weight: float = 0.0
    size: int = 512
    style_size: Optional[int] = None
    steps: int = 150
    seed: int = 0
    snapshot_every: int = 0
    checkpoint_every: int = 50
    resume: Optional[str] = None


ConfigStore.instance().store(name="style_transfer_schema", node=StyleTransferConfig)
