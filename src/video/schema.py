"""Typed schema of conf/video.yaml: the single-image schema (src/schema.py) plus a `video` node.

Checks that types cannot express are in src/video/runner.py:validate_video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.transfer.schema import StyleTransferConfig


class FlowMethod(StrEnum):
    dis = "dis"  # OpenCV's DIS optical flow
    farneback = "farneback"  # OpenCV's Farneback optical flow


class FlowPreset(StrEnum):  # DIS's speed/quality presets
    ultrafast = "ultrafast"
    fast = "fast"
    medium = "medium"


class VideoInit(StrEnum):
    warped = "warped"  # from the previous stylised frame warped by the flow
    fresh = "fresh"  # every frame from `init`, like a single image


@dataclass
class FlowConfig:
    """Optical flow (OpenCV DIS) and Ruder et al.'s reliability thresholds (src/video/flow.py)."""

    method: FlowMethod = FlowMethod.dis
    preset: FlowPreset = FlowPreset.medium
    consistency: float = 0.01  # forward-backward check: relative tolerance
    consistency_offset: float = 0.5  # ... and absolute tolerance, px^2
    motion_boundary: float = 0.01  # flow-gradient check: relative tolerance
    motion_boundary_offset: float = 0.002  # ... and absolute tolerance
    cache_dir: str | None = "outputs/video/flow_cache"  # shared between runs; null: <run dir>/flow


@dataclass
class VideoConfig:
    path: str = MISSING  # the clip (relative to where the command runs)
    start: float = 0.0  # seconds
    end: float | None = None  # seconds; null: the clip's end
    max_frames: int | None = None  # null: every frame of the range
    fps: float | None = None  # null: the source's frame rate; else resample to this rate
    temporal_weight: float = 1.0e5  # weight of the masked squared difference to the warped previous frame(s)
    long_term: list[int] = field(default_factory=list)  # more previous frames tied in, e.g. [2, 4]
    first_steps: int = 150  # optimiser steps of the first frame (the others take `steps`)
    init: VideoInit = VideoInit.warped
    crf: int = 18  # H.264 quality of stylised.mp4 (lower: better, bigger)
    flow: FlowConfig = field(default_factory=FlowConfig)


@dataclass
class VideoStyleTransferConfig(StyleTransferConfig):
    video: VideoConfig = field(default_factory=VideoConfig)


def register_video_schema() -> None:
    """Make the schema known to Hydra as `video_schema` (conf/video.yaml's first default)."""
    ConfigStore.instance().store(name="video_schema", node=VideoStyleTransferConfig)
