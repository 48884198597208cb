"""Video stylisation (src/video): flow and warping, reliability masks, the temporal term, the
command line end to end on tiny synthetic clips, resume after an interrupt, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from PIL import Image

from src.video import io
from src.video.flow import exclusive_masks, grey, optical_flow, reliability, warp, warping_error
from src.video.temporal import PIXEL_SCALE, TemporalTarget, VideoFrameTransfer, temporal_loss

FAST = ["size=48", "steps=4", "video.first_steps=8", "logger=none", "device=cpu"]


# -- synthetic clips -----------------------------------------------------------------------------


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random colours: enough structure for optical flow everywhere."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def moving_square_frames(
    count: int, height: int = 48, width: int = 64, pan: int = 2, speed: int = 4
) -> list[np.ndarray]:
    """A background panning `pan` px a frame and a red square moving `speed` px a frame over it."""
    background = texture(height, width + pan * count)
    frames = []
    for index in range(count):
        frame = background[:, pan * index : pan * index + width].copy()
        frame[12:28, 8 + speed * index : 24 + speed * index] = (220, 30, 30)
        frames.append(frame)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10, audio: bool = False) -> Path:
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=fps, options={"crf": "10"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        sound = output.add_stream("aac", rate=22050) if audio else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
        if sound is not None:
            seconds = np.arange(int(22050 * len(frames) / fps)) / 22050
            samples = (0.2 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 22050, 0
            output.mux(sound.encode(chunk))
            output.mux(sound.encode(None))
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4", moving_square_frames(4), audio=True)


def streams(path: Path) -> dict[str, tuple[str, int]]:
    """{type: (codec, frames decoded)} of a video file."""
    result = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            result[stream.type] = (stream.codec_context.name, 0)
        result["video"] = (result["video"][0], sum(1 for _ in container.decode(video=0)))
    return result


# -- flow and warping ------------------------------------------------------------------------------


def test_warp_by_a_constant_flow_is_an_exact_shift():
    image = texture(32, 40).astype(np.float32) / 255
    flow = np.zeros((32, 40, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3, -2  # sample 3 px right, 2 px up
    warped = warp(image, flow)
    assert np.allclose(warped[2:, :-3], image[:-2, 3:])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_recovers_a_known_shift_and_warping_undoes_it(method):
    big = texture(80, 100)
    earlier, later = big[10:74, 10:90], big[12:76, 7:87]  # later(p) = earlier(p + (-3, 2))
    backward = optical_flow(grey(later), grey(earlier), method=method)
    inner = backward[8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(-3, abs=0.15)
    assert np.median(inner[..., 1]) == pytest.approx(2, abs=0.15)
    warped = warp(earlier.astype(np.float32) / 255, backward)
    error = np.abs(warped - later / 255)[8:-8, 8:-8].mean()
    assert error < 0.2 * np.abs(earlier / 255 - later / 255)[8:-8, 8:-8].mean()
    assert reliability(backward, optical_flow(grey(earlier), grey(later), method=method))[8:-8, 8:-8].mean() > 0.95


def test_reliability_marks_the_disoccluded_strip_and_nothing_far_away():
    """Analytic flows of a square moving 6 px right over a still background: the strip it
    uncovers in frame t was hidden in t-1 (no consistent flow), the rest is consistent."""
    height, width, speed = 40, 60, 6
    square = (slice(10, 26), slice(20, 36))  # where it is in t-1
    forward = np.zeros((height, width, 2), np.float32)  # t-1 -> t
    forward[square[0], square[1], 0] = speed
    backward = np.zeros((height, width, 2), np.float32)  # t -> t-1
    backward[square[0], square[1].start + speed : square[1].stop + speed, 0] = -speed
    mask = reliability(backward, forward)
    uncovered = mask[12:24, 21 : 20 + speed]  # background in t, under the square in t-1 (edges aside)
    assert uncovered.max() == 0
    assert mask[30:, :].min() == 1 and mask[:, 45:].min() == 1  # far from the motion
    assert mask[12:24, 28:40].min() == 1  # inside the moving square: consistent


def test_reliability_from_dis_flow_on_a_clip_with_an_occlusion():
    """A textured 24 px square moving 6 px right over a still textured background."""
    background, square = texture(96, 128, seed=0), texture(24, 24, seed=5)
    frames = []
    for left in (16, 22):
        frame = background.copy()
        frame[20:44, left : left + 24] = square
        frames.append(grey(frame))
    earlier, later = frames
    mask = reliability(optical_flow(later, earlier), optical_flow(earlier, later))
    assert mask[22:42, 16:22].mean() < 0.2  # the strip the square uncovered: hidden in the earlier frame
    assert mask[56:, :].mean() > 0.95  # still background away from it


def test_exclusive_masks_tie_each_pixel_to_its_nearest_reliable_frame():
    near = np.array([1, 0, 0, 1], np.float32)
    far = np.array([1, 1, 0, 0], np.float32)
    farther = np.array([1, 1, 1, 0], np.float32)
    assert [m.tolist() for m in exclusive_masks([near, far, farther])] == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]


def test_warping_error_counts_reliable_pixels_only():
    current = np.zeros((4, 4, 3), np.float32)
    previous = np.zeros((4, 4, 3), np.float32)
    previous[0, 0] = 1.0
    flow = np.zeros((4, 4, 2), np.float32)
    mask = np.ones((4, 4), np.float32)
    assert warping_error(current, previous, flow, mask) == pytest.approx(1 / 16)
    mask[0, 0] = 0
    assert warping_error(current, previous, flow, mask) == 0


# -- reading frames -----------------------------------------------------------------------------


def test_frames_of_a_range_and_resampled(tmp_path):
    path = write_clip(tmp_path / "c.mp4", moving_square_frames(6))
    info = io.probe(path)
    assert (info.width, info.height, info.fps, info.has_audio) == (64, 48, 10, False)
    assert [f.index for f in io.read_frames(info, 0.0, info.duration)] == list(range(6))
    ranged = list(io.read_frames(info, 0.2, 0.5))
    assert [round(f.time, 3) for f in ranged] == [0.2, 0.3, 0.4]
    assert len(list(io.read_frames(info, 0.0, info.duration, max_frames=2))) == 2
    half = list(io.read_frames(info, 0.0, info.duration, fps=Fraction(5)))
    assert [round(f.time, 3) for f in half] == [0.0, 0.2, 0.4]
    originals = list(io.read_frames(info, 0.0, info.duration))
    assert np.array_equal(np.asarray(half[1].image), np.asarray(originals[2].image))
    double = list(io.read_frames(info, 0.0, info.duration, fps=Fraction(20)))
    assert len(double) == 12 and np.array_equal(np.asarray(double[2].image), np.asarray(originals[1].image))


# -- the temporal term ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_module_parts():
    from hydra import compose, initialize_config_dir

    from src.transfer.build import build_module
    from src.transfer.inputs import Inputs
    from src.video.runner import load_styles
    from src.video.schema import register_video_schema

    register_video_schema()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("video", overrides=["size=32", "device=cpu", "video.path=unused.mp4"])
    content = Image.fromarray(texture(24, 32))
    inputs = Inputs(content, load_styles(cfg))
    plain = build_module(cfg, inputs=inputs)
    return cfg, inputs, plain


def build_frame(parts, targets, weight, init=None):
    from src.transfer.build import build_module

    cfg, inputs, plain = parts
    return build_module(
        cfg,
        inputs=inputs,
        backbone=plain.backbone,
        init=init,
        module_class=lambda **kw: VideoFrameTransfer(temporal=targets, temporal_weight=weight, **kw),
    )


def test_without_temporal_targets_the_frame_cost_is_the_single_image_cost(frame_module_parts):
    cfg, inputs, plain = frame_module_parts
    frame = build_frame(frame_module_parts, [], 1e5)
    image = torch.rand_like(plain.image)
    expected, got = plain.evaluate_image(image), frame.evaluate_image(image)
    assert got.pop("loss/temporal") == 0
    assert got == expected


def test_temporal_term_is_the_masked_squared_difference(frame_module_parts):
    cfg, inputs, plain = frame_module_parts
    target = torch.rand_like(plain.image)
    mask = torch.ones(1, 1, *target.shape[-2:])
    mask[..., :, :10] = 0
    frame = build_frame(frame_module_parts, [TemporalTarget(target, mask, "t-1")], 100.0)
    image = target.clone()
    image[..., :, :10] = 0.0  # different only where the mask is 0
    terms = frame.evaluate_image(image)
    assert terms["loss/temporal"] == 0
    image[0, 0, 5, 20] += 0.1  # one value, reliable
    terms = frame.evaluate_image(image)
    expected = 100.0 * (0.1 * PIXEL_SCALE) ** 2 / target.numel()
    assert terms["loss/temporal"] == pytest.approx(expected, rel=1e-3)
    assert terms["loss/temporal/t-1"] == terms["loss/temporal"]
    single = plain.evaluate_image(image)
    assert terms["loss/total"] == pytest.approx(single["loss/total"] + expected, rel=1e-5)
    assert float(temporal_loss(image, target, mask)) == pytest.approx(expected / 100, rel=1e-3)


def test_under_relative_normalization_the_temporal_term_keeps_its_ratio_to_the_content_term(frame_module_parts):
    """temporal_weight means the same against alpha in both normalisations: the temporal term is
    scaled as the content term is."""
    from hydra import compose, initialize_config_dir

    from src.transfer.build import build_module

    cfg, inputs, plain = frame_module_parts
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        relative_cfg = compose(
            "video", overrides=["size=32", "device=cpu", "video.path=unused.mp4", "normalization=relative"]
        )
    target = torch.rand_like(plain.image)
    image = torch.rand_like(plain.image)
    reliable = torch.ones(1, 1, *target.shape[-2:])
    ratios = []
    for config in (cfg, relative_cfg):
        frame = build_module(
            config,
            inputs=inputs,
            backbone=plain.backbone,
            module_class=lambda **kw: VideoFrameTransfer(
                temporal=[TemporalTarget(target, reliable, "t-1")], temporal_weight=1e5, **kw
            ),
        )
        terms = frame.evaluate_image(image)
        ratios.append(terms["loss/temporal"] / terms["loss/content"])
    assert relative_cfg.normalization == "relative" and cfg.normalization == "gatys"
    assert ratios[1] == pytest.approx(ratios[0], rel=1e-4)


def test_temporal_weight_keeps_the_result_near_the_warped_frame(frame_module_parts, tmp_path):
    import pytorch_lightning as pl

    from src.transfer.trainer import fit, trainer_settings

    cfg, inputs, plain = frame_module_parts
    target = torch.rand_like(plain.image)  # a "previous frame" far from what the style alone gives
    mask = torch.ones(1, 1, *target.shape[-2:])
    distances = {}
    for weight in (0.0, 1e8):
        module = build_frame(frame_module_parts, [TemporalTarget(target, mask, "t-1")], weight)
        trainer = pl.Trainer(**trainer_settings(cfg, 15, tmp_path), logger=False, enable_progress_bar=False)
        fit(trainer, module, 15)
        distances[weight] = (module.image.detach() - target).square().mean().item()
    assert distances[1e8] < 0.5 * distances[0.0]


# -- the command line ----------------------------------------------------------------------------


def read_frames_csv(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "frames.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_command_writes_every_output_and_reuses_flows(tmp_path, clip):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    result = run_cli(
        f"video.path={clip}",
        *FAST,
        "logger=csv",
        f"video.flow.cache_dir={cache}",
        "video.long_term=[2]",
        f"hydra.run.dir={run_dir}",
        module="src.video",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frames = sorted((run_dir / "frames").glob("frame_*.png"))
    assert [p.name for p in frames] == [f"frame_{i:05d}.png" for i in range(4)]
    assert Image.open(frames[0]).size == (48, 36)
    video = streams(run_dir / "stylised.mp4")
    assert video["video"] == ("h264", 4) and video["audio"][0] == "aac"
    with av.open(str(run_dir / "stylised.mp4")) as container:
        assert container.streams.video[0].average_rate == 10
    assert streams(run_dir / "preview.mp4")["video"] == ("h264", 4)
    with av.open(str(run_dir / "preview.mp4")) as container:
        assert container.streams.video[0].width == 96  # content | stylised
    rows = read_frames_csv(run_dir)
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3]
    assert [int(r["steps"]) for r in rows] == [8, 4, 4, 4]
    assert rows[0]["warping_error"] == "" and all(float(r["warping_error"]) > 0 for r in rows[1:])
    assert all(float(r["loss/temporal"]) > 0 for r in rows[1:]) and float(rows[0]["loss/temporal"]) == 0
    assert "loss/temporal/t-2" in rows[0] and rows[2]["loss/temporal/t-2"] != ""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["frames"] == 4 and metrics["warping_error"] > 0
    assert (run_dir / "loss.png").stat().st_size > 10_000 and (run_dir / "final.png").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()

    again = run_cli(
        f"video.path={clip}",
        *FAST,
        "logger=wandb",  # offline here: no login
        "style=shipwreck",
        f"video.flow.cache_dir={cache}",
        "video.long_term=[2]",
        f"hydra.run.dir={tmp_path / 'again'}",
        module="src.video",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "flows: 0 computed, 5 from the cache" in (tmp_path / "again" / "__main__.log").read_text()
    # W&B: each frame's terms at its index, both videos, the run's metrics in the summary
    from test_wandb import OfflineRun

    logged = OfflineRun(tmp_path / "again")
    assert logged.exit_code == 0
    frame_rows = [row for row in logged.history if "frame/loss/total" in row]
    assert [row["_step"] for row in frame_rows] == [0, 1, 2, 3]
    assert all(row["frame/loss/temporal"] > 0 for row in frame_rows[1:])
    for key in ("video/stylised", "video/preview"):
        assert any(row.get(f"{key}/_type") == "video-file" for row in logged.history), key
    assert logged.summary["frames"] == 4 and logged.summary["warping_error"] > 0
    refused = run_cli(f"video.path={clip}", *FAST, f"hydra.run.dir={run_dir}", module="src.video")
    assert refused.returncode == 2 and "already holds a finished video" in refused.stderr


def test_temporal_weight_lowers_the_warping_error(tmp_path, clip):
    errors = {}
    for weight, init in (("0", "fresh"), ("1e6", "warped")):
        run_dir = tmp_path / f"w{weight}"
        result = run_cli(
            f"video.path={clip}",
            "size=48",
            "steps=10",
            "video.first_steps=10",
            "logger=none",
            "device=cpu",
            f"video.temporal_weight={weight}",
            f"video.init={init}",
            f"video.flow.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
            module="src.video",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        errors[weight] = json.loads((run_dir / "metrics.json").read_text())["warping_error"]
    assert errors["1e6"] < 0.5 * errors["0"]


def test_interrupt_then_resume_gives_the_frames_of_an_uninterrupted_run(tmp_path, clip):
    args = [
        f"video.path={clip}",
        "size=48",
        "steps=12",
        "video.first_steps=12",
        "logger=none",
        "device=cpu",
        "checkpoint_every=4",
        f"video.flow.cache_dir={tmp_path / 'cache'}",
    ]
    stopped = tmp_path / "stopped"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        [sys.executable, "-m", "src.video", *args, f"hydra.run.dir={stopped}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (stopped / "frames" / "frame_00001.png").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "stopped by SIGINT" in stderr and f"resume={stopped}" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (stopped / "stylised.mp4").exists()
    assert len(read_frames_csv(stopped)) in (2, 3)

    resumed = run_cli(f"resume={stopped}", f"hydra.run.dir={tmp_path / 'resume_cmd'}", module="src.video")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = tmp_path / "straight"
    result = run_cli(*args, f"hydra.run.dir={straight}", module="src.video")
    assert result.returncode == 0, result.stderr[-3000:]
    for index in range(4):
        name = f"frames/frame_{index:05d}.png"
        assert (stopped / name).read_bytes() == (straight / name).read_bytes(), name
    assert [r["steps"] for r in read_frames_csv(stopped)] == [r["steps"] for r in read_frames_csv(straight)]
    assert (stopped / "stylised.mp4").is_file() and not (stopped / "checkpoints" / "last.ckpt").exists()


# -- bad input: one line, exit 2 ------------------------------------------------------------------


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as output:
        sound = output.add_stream("aac", rate=22050)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = 22050, 0
        output.mux(sound.encode(chunk))
        output.mux(sound.encode(None))
    return path


def no_frames(path: Path) -> Path:
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        output.start_encoding()
        output.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    "case, words",
    [
        ("text", "not a readable video"),
        ("audio", "has no video stream"),
        ("empty_stream", "zero-length clip"),
        ("zero_bytes", "empty (zero-byte) file"),
        ("missing", "video not found"),
        ("start_past_end", "past the end"),
        ("end_before_start", "must be after video.start"),
        ("bad_init", "video.init=cold: must be one of warped, fresh"),
        ("bad_long_term", "video.long_term=[1]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, clip, case, words):
    path, extra = clip, []
    if case == "text":
        path = tmp_path / "notes.mp4"
        path.write_text("this is not a video\n" * 50)
    elif case == "audio":
        path = audio_only(tmp_path / "sound.m4a")
    elif case == "empty_stream":
        path = no_frames(tmp_path / "empty.mp4")
    elif case == "zero_bytes":
        path = tmp_path / "zero.mp4"
        path.write_bytes(b"")
    elif case == "missing":
        path = tmp_path / "nowhere.mp4"
    else:
        extra = {
            "start_past_end": ["video.start=10"],
            "end_before_start": ["video.start=0.2", "video.end=0.1"],
            "bad_init": ["video.init=cold"],
            "bad_long_term": ["video.long_term=[1]"],
        }[case]
    run_dir = tmp_path / "run"
    result = run_cli(f"video.path={path}", *FAST, *extra, f"hydra.run.dir={run_dir}", module="src.video")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert not list((run_dir / "frames").glob("*.png")) if (run_dir / "frames").exists() else True


def test_an_unreadable_frame_part_way_keeps_the_frames_done_and_says_so(tmp_path):
    """The bundled clip with 200 kB zeroed half-way: the frames before the damage are stylised,
    written as stylised.mp4 and preview.mp4, and the run fails in one line (exit 2)."""
    data = bytearray((ROOT / "assets" / "video" / "bigbuckbunny.mp4").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200_000] = bytes(200_000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    run_dir = tmp_path / "run"
    result = run_cli(
        f"video.path={damaged}",
        "video.start=2.0",
        "video.flow.cache_dir=null",
        *FAST,
        f"hydra.run.dir={run_dir}",
        module="src.video",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert "cannot be decoded" in line and "kept 4 stylised frames" in line, line
    assert len(list((run_dir / "frames").glob("frame_*.png"))) == 4
    assert streams(run_dir / "stylised.mp4")["video"][1] == 4 and streams(run_dir / "preview.mp4")["video"][1] == 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "cannot be decoded" in metrics["error"]
