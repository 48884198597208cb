"""Optical flow between content frames (OpenCV's DIS), its reliability, warping, and a cache.

A flow `f` from frame a to frame b says where each pixel p of a is found in b:
a(p) ~ b(p + f(p)). To bring the previous stylised frame into frame t we sample it at
p + backward(p), with `backward` the flow from t to t-1 (warp()).

Reliability (Ruder et al. 2016, section 3.1): a pixel of frame t is unreliable where the
forward and backward flows disagree (disocclusion: the point was hidden in t-1) or on a
motion boundary (the flow changes abruptly), and where it comes from outside frame t-1:

    |b + f~|^2 > consistency * (|b|^2 + |f~|^2) + consistency_offset       f~ = f warped by b
    |grad b_x|^2 + |grad b_y|^2 > motion_boundary * |b|^2 + motion_boundary_offset
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}



@dataclass(frozen=True)
class FlowSettings:
    method: str = "dis"
    preset: str = "medium"
    consistency: float = 0.01
    consistency_offset: float = 0.5  # px^2
    motion_boundary: float = 0.01
    motion_boundary_offset: float = 0.002  # px^2 per px^2


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luminance, what DIS works on."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def optical_flow(source: np.ndarray, target: np.ndarray, preset: str = "medium", method: str = "dis") -> np.ndarray:
    """(H, W, 2) float32 flow from `source` to `target` (greyscale uint8 images of one size):
    DIS (fast; `preset`) or Farneback (slower, smoother)."""
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(source, target, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])  # type: ignore[attr-defined]
    return dis.calc(source, target, None)


def sample_positions(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    columns, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return columns + flow[..., 0], rows + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` (H, W[, C]) float32 sampled at p + flow(p), bilinear; edges repeated outside."""
    map_x, map_y = sample_positions(flow)
    return cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def reliability(backward: np.ndarray, forward: np.ndarray, settings: FlowSettings = FlowSettings()) -> np.ndarray:
    """(H, W) float32 mask of frame t: 1 where `backward` (t -> s) can be trusted, 0 elsewhere.

    `forward` is the flow s -> t; both at the same size, in pixels."""
    forward_at = warp(forward, backward)
    disagreement = np.square(backward + forward_at).sum(-1)
    lengths = np.square(backward).sum(-1) + np.square(forward_at).sum(-1)
    disoccluded = disagreement > settings.consistency * lengths + settings.consistency_offset
    gradients = [np.gradient(backward[..., axis]) for axis in (0, 1)]  # d/dy, d/dx of each component
    steepness = sum(np.square(g).sum(0) for g in gradients)
    boundary = steepness > settings.motion_boundary * np.square(backward).sum(-1) + settings.motion_boundary_offset
    map_x, map_y = sample_positions(backward)
    height, width = backward.shape[:2]
    outside = (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)
    return (~(disoccluded | boundary | outside)).astype(np.float32)


def exclusive_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Long-term masks, nearest previous frame first: each pixel is tied to the nearest frame
    where it is reliable only (Ruder et al. 2016, eq. 8): c_j - sum of the nearer ones, >= 0."""
    result, covered = [], np.zeros_like(masks[0])
    for mask in masks:
        result.append(np.clip(mask - covered, 0.0, 1.0))
        covered = covered + mask
    return result


def warping_error(current: np.ndarray, previous: np.ndarray, backward: np.ndarray, mask: np.ndarray) -> float:
    """Mean over reliable pixels of the squared difference (RGB in [0, 1], summed over channels / 3)
    between frame t and frame t-1 warped into t (Lai et al. 2018); NaN with no reliable pixel."""
    if mask.sum() == 0:
        return float("nan")
    difference = np.square(current - warp(previous, backward)).mean(-1)
    return float((difference * mask).sum() / mask.sum())


class FlowCache:
    """Flows of one frame selection at one size, as .npz files in a folder named by a key of
    everything they depend on (the file, the frame range and rate, the size, the settings)."""

    def __init__(self, root: Path, key: dict) -> None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.directory = root / digest
        self.key = key
        self.hits = 0
        self.computed = 0

    @staticmethod
    def key_for(video: Path, selection: dict, size: tuple[int, int], settings: FlowSettings) -> dict:
        stat = video.stat()
        return {
            "video": str(video.resolve()),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "selection": selection,
            "size": list(size),
            "settings": asdict(settings),
        }

    def pair(
        self, later: int, earlier: int, later_grey: np.ndarray, earlier_grey: np.ndarray, settings: FlowSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        """(backward later -> earlier, forward earlier -> later), from the cache or computed."""
        path = self.directory / f"flow_{later:05d}_{earlier:05d}.npz"
        if path.is_file():
            try:
                with np.load(path) as saved:
                    backward, forward = saved["backward"], saved["forward"]
                if backward.shape[:2] == later_grey.shape:
                    self.hits += 1
                    return backward, forward
            except (OSError, ValueError, KeyError):
                pass  # a broken file is computed again
        backward = optical_flow(later_grey, earlier_grey, settings.preset, settings.method)
        forward = optical_flow(earlier_grey, later_grey, settings.preset, settings.method)
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if not key_file.is_file():
            key_file.write_text(json.dumps(self.key, indent=2, default=str))
        temporary = path.with_name(path.stem + ".tmp.npz")
        np.savez(temporary, backward=backward, forward=forward)
        os.replace(temporary, path)
        self.computed += 1
        return backward, forward
