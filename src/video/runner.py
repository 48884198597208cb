"""stylize_video(cfg, output_dir): a clip stylised frame after frame, kept consistent over time.

Per frame t (Ruder et al. 2016): optical flow between content frames t and t-j (j = 1 and
video.long_term), the reliability masks, stylised frame t-j warped into t; the frame starts
from the warped previous result (the content where the flow is unreliable) and minimises
J + video.temporal_weight * the masked squared difference to the warped frames.

A run folder holds:
  frames/frame_00000.png ...  every finished frame, written as soon as it is done
  frames.csv                  one row per finished frame (loss terms, warping error, seconds)
  stylised.mp4, preview.mp4   H.264 at the clip's rate with its audio; content | stylised
  loss.png, metrics.json, final.png (the last frame, for sweep contact sheets)
  checkpoints/                the frame in progress, after Ctrl-C or SIGTERM (or every checkpoint_every steps)

Every frame is computed from files on disk (the previous stylised frames as saved PNGs), so a
resumed run gives the very frames of an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from src.backbone.vgg import VGG19Features
from src.common.errors import Interrupted, RunStopped, UserError
from src.common.images import load_image, resize, save_image, size_for_long_side
from src.common.paths import resolve_input_path
from src.transfer.build import build_module
from src.transfer.checkpoints import Checkpointer, StopOnSignal, checkpoint_path, save_checkpoint
from src.transfer.inputs import Inputs, StyleInput, resolve_style_path, style_entries
from src.transfer.trainer import fit, trainer_settings
from src.transfer.validate import validate
from src.video import io
from src.video.flow import (
    FlowCache,
    FlowSettings,
    exclusive_masks,
    grey,
    reliability,
    warp,
    warping_error,
)
from src.video.report import LOSS_PLOT, plot_over_frames, read_rows, summarise, write_rows
from src.video.temporal import TemporalTarget, VideoFrameTransfer

log = logging.getLogger(__name__)

FRAMES_DIR = "frames"
VIDEO_FILE = "stylised.mp4"
PREVIEW_FILE = "preview.mp4"
IN_PROGRESS_FILE = "frame.json"  # next to the checkpoint: which frame it belongs to


def frame_path(run_dir: Path, index: int) -> Path:
    return run_dir / FRAMES_DIR / f"frame_{index:05d}.png"


def validate_video(cfg: DictConfig) -> None:
    """Check the `video` node's values (types are checked by the schema) and what video runs refuse."""
    video = cfg.video
    if video.max_frames is not None and video.max_frames < 1:
        raise UserError(f"video.max_frames={video.max_frames}: must be null or a positive integer")
    if video.fps is not None and not (math.isfinite(video.fps) and video.fps > 0):
        raise UserError(f"video.fps={video.fps}: must be null (the source's rate) or a number > 0")
    if not math.isfinite(video.temporal_weight) or video.temporal_weight < 0:
        raise UserError(f"video.temporal_weight={video.temporal_weight}: must be a finite number >= 0")
    if any(not isinstance(j, int) or j < 2 for j in video.long_term):
        raise UserError(f"video.long_term={list(video.long_term)}: frame distances must be integers >= 2, e.g. [2,4]")
    if not isinstance(video.first_steps, int) or video.first_steps < 1:
        raise UserError(f"video.first_steps={video.first_steps}: must be a positive integer")
    if not 0 <= video.crf <= 51:
        raise UserError(f"video.crf={video.crf}: must be in 0..51")
    if cfg.pyramid.levels != 1:
        raise UserError("pyramid: coarse to fine is not available for video; leave pyramid.levels=1")
    if cfg.device.get("devices", 1) != 1:
        raise UserError(
            f"device.devices={cfg.device.devices}: a video's frames are computed whole, on one device; "
            "leave device.devices=1"
        )


def load_styles(cfg: DictConfig) -> list[StyleInput]:
    """The style images (style.path and any blend), as src.transfer.inputs.load_inputs reads them."""
    entries = style_entries(cfg)
    total = sum(weight for _, _, weight, _ in entries)
    styles: list[StyleInput] = []
    names: list[str] = []
    for key, path, weight, mask in entries:
        if mask is not None:
            raise UserError(f"{key}.mask: masks are not available for video (a mask would not follow the motion)")
        image = load_image(resolve_style_path(path), role="style" if key == "style" else key)
        name = Path(str(path)).stem or key
        if name in names:
            name = f"{name}_{len(names)}"
        names.append(name)
        styles.append(StyleInput(image, weight / total, None, name))
    return styles


@dataclass
class Clip:
    """The selected frames of the input: where, how many per second, at what output size."""

    info: io.VideoInfo
    start: float
    end: float
    fps: Fraction
    resample: Fraction | None
    max_frames: int | None
    size: tuple[int, int]  # (width, height) of the output frames

    def frames(self, count: int | None = None) -> Iterator[io.Frame]:
        """The selected frames; with `count`, only the first `count` (nothing decoded after them)."""
        limit = self.max_frames if count is None else min(count, self.max_frames or count)
        return io.read_frames(self.info, self.start, self.end, limit, self.resample)

    def selection(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "fps": str(self.resample), "max_frames": self.max_frames}


def open_clip(cfg: DictConfig) -> Clip:
    info = io.probe(resolve_input_path(cfg.video.path))
    end = io.check_range(info, float(cfg.video.start), cfg.video.end)
    resample = Fraction(cfg.video.fps).limit_denominator(1001) if cfg.video.fps else None
    return Clip(
        info,
        float(cfg.video.start),
        end,
        resample or info.fps,
        resample,
        cfg.video.max_frames,
        size_for_long_side(info.width, info.height, cfg.size),
    )


class LoopSignals:
    """Ctrl-C or SIGTERM between frames: stop before the next one (during a frame,
    src.transfer.checkpoints.StopOnSignal takes over and the frame in progress is checkpointed)."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @contextmanager
    def installed(self) -> Iterator[LoopSignals]:
        previous = {s: signal.signal(s, self._handle) for s in StopOnSignal.SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@dataclass
class History:
    """The content frames (uint8 RGB) and their greys that later frames need: the last `keep`."""

    keep: int
    images: dict[int, np.ndarray] = field(default_factory=dict)
    greys: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, index: int, image: np.ndarray) -> None:
        self.images[index] = image
        self.greys[index] = grey(image)
        for old in [i for i in self.greys if i < index - self.keep]:
            del self.images[old], self.greys[old]


def stylised_array(run_dir: Path, index: int) -> np.ndarray:
    """A finished frame as saved (8 bits), (H, W, 3) float32 in [0, 1]."""
    with Image.open(frame_path(run_dir, index)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) float32 -> (1, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).contiguous()


@dataclass
class FramePlan:
    """Frame t's temporal targets and start image, from the flows to its predecessors."""

    targets: list[TemporalTarget]
    init: torch.Tensor | None  # None: the `init` group's start (the first frame)
    backward: np.ndarray | None = None  # flow t -> t-1
    mask: np.ndarray | None = None  # where it is reliable
    content_warping_error: float = math.nan  # the content video's own, a reference for the stylised one

    @property
    def reliable(self) -> float:
        return float(self.mask.mean()) if self.mask is not None else math.nan

    def warping_error(self, current: np.ndarray, previous: np.ndarray) -> float:
        """Lai et al.'s warping error of frame t against t-1, by the content's flow (NaN for frame 0)."""
        if self.backward is None or self.mask is None:
            return math.nan
        return warping_error(current, previous, self.backward, self.mask)


def plan_frame(
    cfg: DictConfig,
    run_dir: Path,
    index: int,
    content: np.ndarray,
    history: History,
    cache: FlowCache,
    settings: FlowSettings,
) -> FramePlan:
    if index == 0:
        return FramePlan([], None)
    offsets = [j for j in [1, *sorted(set(cfg.video.long_term))] if j <= index]
    masks, warped, backward_1 = [], [], None
    for offset in offsets:
        backward, forward = cache.pair(
            index, index - offset, history.greys[index], history.greys[index - offset], settings
        )
        masks.append(reliability(backward, forward, settings))
        warped.append(warp(stylised_array(run_dir, index - offset), backward))
        if offset == 1:
            backward_1 = backward
    content_float = content.astype(np.float32) / 255.0
    previous_content = history.images[index - 1].astype(np.float32) / 255.0
    targets = [
        TemporalTarget(as_tensor(image), as_tensor(mask[..., None]), f"t-{offset}")
        for image, mask, offset in zip(warped, exclusive_masks(masks), offsets, strict=True)
    ]
    init = None
    if cfg.video.init == "warped":
        reliable = masks[0][..., None]
        init = as_tensor(reliable * warped[0] + (1.0 - reliable) * content_float)
    plan = FramePlan(targets, init, backward_1, masks[0])
    plan.content_warping_error = plan.warping_error(content_float, previous_content)
    return plan


def stylize_video(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Stylise cfg.video.path into `output_dir`, continuing a run that is already there."""
    validate(cfg)
    validate_video(cfg)
    run_dir = Path(output_dir)
    if (run_dir / VIDEO_FILE).exists():
        raise UserError(f"{run_dir} already holds a finished video ({VIDEO_FILE}); refusing to overwrite it")
    clip = open_clip(cfg)
    styles = load_styles(cfg)
    (run_dir / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    flow = cfg.video.flow
    settings = FlowSettings(
        flow.method,
        flow.preset,
        flow.consistency,
        flow.consistency_offset,
        flow.motion_boundary,
        flow.motion_boundary_offset,
    )
    cache_root = resolve_input_path(cfg.video.flow.cache_dir) if cfg.video.flow.cache_dir else run_dir / "flow"
    cache = FlowCache(cache_root, FlowCache.key_for(clip.info.path, clip.selection(), clip.size, settings))
    rows = read_rows(run_dir)
    missing = [row["frame"] for row in rows if not frame_path(run_dir, int(row["frame"])).is_file()]
    if missing:
        raise UserError(f"{run_dir}: frames.csv lists frames whose PNG is gone ({int(missing[0])}...); start a new run")
    in_progress = read_in_progress(run_dir)
    if rows:
        log.info("continuing %s at frame %d", run_dir, len(rows))
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger.get("_target_") else None
    history = History(keep=max([1, *cfg.video.long_term]))
    backbone: VGG19Features | None = None
    info = {
        "status": "running",
        "fps": float(clip.fps),
        "width": clip.size[0],
        "height": clip.size[1],
        "source": str(clip.info.path),
        "start": clip.start,
        "end": clip.end,
    }
    succeeded = False
    try:
        with LoopSignals().installed() as loop_signals:
            for frame in clip.frames():
                content = np.asarray(resize(frame.image, clip.size), dtype=np.uint8)
                history.add(frame.index, content)
                if frame.index < len(rows):
                    continue  # finished before a resume
                if loop_signals.received is not None:
                    stopped_between(run_dir, rows, loop_signals.received, frame.index)
                plan = plan_frame(cfg, run_dir, frame.index, content, history, cache, settings)
                resume_from = checkpoint_path(run_dir) if in_progress == frame.index else None
                row, backbone = run_frame(cfg, run_dir, frame, styles, plan, backbone, resume_from)
                rows.append(row)
                write_rows(run_dir, rows)
                write_metrics(run_dir, summarise(rows, info))
                if logger is not None:
                    logger.log_metrics({f"frame/{k}": v for k, v in row.items() if math.isfinite(v)}, step=frame.index)
        if not rows:
            raise UserError(f"{clip.info.path}: no frames between {clip.start} s and {clip.end} s")
        log.info("flows: %d computed, %d from the cache %s", cache.computed, cache.hits, cache.directory)
        metrics = finish(cfg, run_dir, clip, rows, {**info, "status": "finished"})
        log_video(logger, run_dir, metrics)
        succeeded = True
        return metrics
    except UserError as error:
        if rows:  # an unreadable frame part-way: keep what was done, say so
            write_outputs(cfg, run_dir, clip, rows)
            write_metrics(run_dir, summarise(rows, {**info, "status": "failed", "error": str(error)}))
            raise UserError(
                f"{error}; kept {len(rows)} stylised frames in {run_dir / FRAMES_DIR} and {run_dir / VIDEO_FILE}"
            ) from None
        raise
    finally:
        if logger is not None:
            close_logger(logger, succeeded)


def stopped_between(run_dir: Path, rows: list, signum: int, index: int) -> None:
    name = signal.Signals(signum).name
    raise Interrupted(
        f"stopped by {name} before frame {index}; {len(rows)} frames are in {run_dir / FRAMES_DIR}; "
        f"continue with resume={run_dir}",
        exit_code=128 + signum,
    )


def read_in_progress(run_dir: Path) -> int | None:
    marker = checkpoint_path(run_dir).parent / IN_PROGRESS_FILE
    if not (marker.is_file() and checkpoint_path(run_dir).is_file()):
        return None
    return int(json.loads(marker.read_text())["frame"])


def run_frame(
    cfg: DictConfig,
    run_dir: Path,
    frame: io.Frame,
    styles: list[StyleInput],
    plan: FramePlan,
    backbone: VGG19Features | None,
    resume_from: Path | None,
) -> tuple[dict[str, float], VGG19Features]:
    """Optimise one frame and save it; return its frames.csv row and the backbone (loaded once)."""
    steps = cfg.video.first_steps if frame.index == 0 else cfg.steps
    module_class = functools.partial(
        VideoFrameTransfer, temporal=plan.targets, temporal_weight=cfg.video.temporal_weight
    )
    module = build_module(
        cfg, init=plan.init, inputs=Inputs(frame.image, styles), backbone=backbone, module_class=module_class
    )
    stop = StopOnSignal()
    checkpointer = Checkpointer(cfg.checkpoint_every, run_dir)
    trainer = pl.Trainer(
        **trainer_settings(cfg, steps, run_dir), logger=False, callbacks=[stop, checkpointer], enable_progress_bar=False
    )
    marker = checkpoint_path(run_dir).parent / IN_PROGRESS_FILE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"frame": frame.index}))
    started = time.perf_counter()
    try:
        fit(trainer, module, steps, resume_from)
    except FloatingPointError as error:
        save_image(module.last_good_image, run_dir / "last_good.png")
        raise RunStopped(f"frame {frame.index}: {error}; saved {run_dir / 'last_good.png'}", exit_code=3) from error
    seconds = time.perf_counter() - started
    if stop.received is not None:
        save_checkpoint(trainer, run_dir)
        save_image(module.output_image(), run_dir / "interrupted.png")
        raise Interrupted(
            f"stopped by {stop.signal_name} at step {trainer.global_step} of {steps} of frame {frame.index}; saved "
            f"interrupted.png and {checkpoint_path(run_dir)}; continue with resume={run_dir}",
            exit_code=128 + stop.received,
        )
    result = module.output_image()
    path = save_image(result, frame_path(run_dir, frame.index))
    saved = stylised_array(run_dir, frame.index)
    final = module.evaluate_image(as_tensor(saved))
    row: dict[str, float] = {
        "frame": frame.index,
        "time": round(frame.time, 6),
        "steps": trainer.global_step,
        "seconds": seconds,
        **final,
        "reliable": plan.reliable,
        "warping_error": math.nan,
        "content_warping_error": plan.content_warping_error,
        "initial_total": module.initial_losses.get("loss/total", math.nan),
    }
    if frame.index > 0:
        row["warping_error"] = plan.warping_error(saved, stylised_array(run_dir, frame.index - 1))
    for target_file in (checkpoint_path(run_dir), marker, run_dir / "interrupted.png"):
        target_file.unlink(missing_ok=True)
    log.info(
        "frame %d (%.2f s): %d steps in %.1f s; style %.4g, content %.4g, temporal %.4g, warping error %.3g -> %s",
        frame.index,
        frame.time,
        trainer.global_step,
        seconds,
        final["loss/style"],
        final["loss/content"],
        final["loss/temporal"],
        row["warping_error"],
        path.name,
    )
    return row, module.backbone


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    temporary = run_dir / "metrics.json.tmp"
    temporary.write_text(json.dumps(metrics, indent=2))
    temporary.replace(run_dir / "metrics.json")


def write_outputs(cfg: DictConfig, run_dir: Path, clip: Clip, rows: list[dict[str, float]]) -> None:
    """stylised.mp4 (with the source's audio for the frames' time span), preview.mp4, loss.png, final.png."""
    count = len(rows)
    audio_end = clip.start + count / float(clip.fps)
    audio = clip.info.path if clip.info.has_audio else None
    stylised = (Image.open(frame_path(run_dir, i)) for i in range(count))
    io.write_video(stylised, run_dir / VIDEO_FILE, clip.fps, audio, clip.start, audio_end, cfg.video.crf)
    io.write_video(
        side_by_side(run_dir, clip, count),
        run_dir / PREVIEW_FILE,
        clip.fps,
        audio,
        clip.start,
        audio_end,
        cfg.video.crf,
    )
    title = (
        f"{clip.info.path.name} in the style of {Path(str(cfg.style.path)).stem}: temporal_weight="
        f"{cfg.video.temporal_weight:g}, {count} frames at {clip.size[0]}x{clip.size[1]}"
    )
    try:
        plot_over_frames(rows, run_dir / LOSS_PLOT, title)
    except Exception as error:  # a picture must never cost the run
        log.warning("could not write %s: %s", LOSS_PLOT, error)
    shutil.copyfile(frame_path(run_dir, count - 1), run_dir / "final.png")


def side_by_side(run_dir: Path, clip: Clip, count: int) -> Iterator[Image.Image]:
    """content | stylised, frame by frame (the content read again from the clip)."""
    for frame in clip.frames(count):
        content = resize(frame.image, clip.size)
        with Image.open(frame_path(run_dir, frame.index)) as stylised:
            pair = Image.new("RGB", (clip.size[0] * 2, clip.size[1]))
            pair.paste(content, (0, 0))
            pair.paste(stylised.convert("RGB"), (clip.size[0], 0))
        yield pair


def finish(
    cfg: DictConfig, run_dir: Path, clip: Clip, rows: list[dict[str, float]], info: dict[str, Any]
) -> dict[str, Any]:
    write_outputs(cfg, run_dir, clip, rows)
    metrics = summarise(rows, info)
    write_metrics(run_dir, metrics)
    log.info(
        "%d frames: %s, %s, %s; warping error %.4g (content %.4g); first frame %.1f s, then %.1f s a frame",
        len(rows),
        run_dir / VIDEO_FILE,
        run_dir / PREVIEW_FILE,
        run_dir / "frames.csv",
        metrics["warping_error"],
        metrics["content_warping_error"],
        metrics["seconds_first_frame"],
        metrics["seconds_per_frame"],
    )
    return metrics


def log_video(logger: Any, run_dir: Path, metrics: dict[str, Any]) -> None:
    """W&B: the stylised video, the preview and the run's summary (the per-frame metrics went already)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    import wandb

    logger.experiment.log(
        {
            "video/stylised": wandb.Video(str(run_dir / VIDEO_FILE), format="mp4"),
            "video/preview": wandb.Video(str(run_dir / PREVIEW_FILE), format="mp4"),
        }
    )
    logger.experiment.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})


def close_logger(logger: Any, succeeded: bool) -> None:
    """Flush the logger; a W&B run is finished with exit code 1 when the run failed."""
    from pytorch_lightning.loggers import WandbLogger

    try:
        logger.finalize("success" if succeeded else "failed")
    except Exception as error:  # closing must not hide the run's own error
        log.warning("could not finalize the %s logger: %s", type(logger).__name__, error)
    if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
        logger.experiment.finish(exit_code=0 if succeeded else 1)
