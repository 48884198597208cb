"""`make bench`: how fast and how big, measured in one run on this machine.

1. Per-step overhead: seconds per optimiser step of a real run (Lightning, logging, clamping
   included) against the floor: one forward + backward of the same truncated backbone at
   the same size, timed alone.
2. Time to quality against pastiche: both minimise the same objective (same images, size,
   layers, weights, pooling, init, L-BFGS); pastiche runs N steps; we measure how long our
   run takes to reach pastiche's final objective, both evaluated by one fp32 evaluation.
3. Memory: peak RSS of short runs at 512, 1024 and 2048 px, and the largest size that fits.

Prints a table and writes outputs/bench/<date-time>/bench.json. Ratios, not absolute times,
are the point: every number in one table comes from the same run on the same machine.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.backbone import build_backbone
from src.images import load_tensor, save_image, to_pil
from src.losses import gram_matrix
from src.paths import PROJECT_ROOT
from src.resources import available_bytes, estimated_peak_bytes
from src.stylize import build_module, stylize

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["logger=none", "device=cpu", "checkpoint_every=0", *overrides])


class StepClock(pl.Callback):
    """Wall-clock time and (optionally) a copy of the image at the end of every step."""

    def __init__(self, keep_images: bool = False) -> None:
        self.keep_images = keep_images
        self.times: list[float] = []
        self.images: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        self.times.append(time.perf_counter())
        if self.keep_images:
            self.images.append(module.image.detach().cpu().clone())


def median_step_seconds(times: list[float]) -> float:
    """Median interval between step ends, skipping the first (warm-up) steps."""
    intervals = [b - a for a, b in zip(times[2:], times[3:])]
    return statistics.median(intervals)


def floor_seconds(height: int, width: int, repeats: int = 5) -> float:
    """One forward + backward of the backbone cut after relu5_1, the loss a plain sum."""
    backbone = build_backbone(last_layer="relu5_1")
    image = torch.rand(1, 3, height, width, requires_grad=True)
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        features = backbone(image, [CONTENT_LAYER, *STYLE_LAYERS])
        sum(f.sum() for f in features.values()).backward()
        timings.append(time.perf_counter() - started)
    return min(timings[1:])


def our_step_seconds(overrides: list[str], steps: int) -> tuple[float, tuple[int, int]]:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as folder:
        metrics = stylize(compose_config(*overrides, f"steps={steps}"), folder, extra_callbacks=[clock])
    return median_step_seconds(clock.times), (metrics["height"], metrics["width"])


def per_step_overhead(sizes: list[int], steps: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        for optimizer in ("lbfgs", "adam"):
            ours, (height, width) = our_step_seconds([f"size={size}", f"optimizer={optimizer}"], steps)
            floor = floor_seconds(height, width)
            rows.append({"size": size, "optimizer": optimizer, "seconds_per_step": ours,
                         "floor_seconds": floor, "ratio": ours / floor})
            print(f"  {size:5d} px {optimizer:6s} {ours:7.3f} s/step  floor {floor:7.3f} s  ratio {ours / floor:5.2f}", flush=True)
    return rows


# -- time to quality against pastiche -------------------------------------------------------


def pastiche_layer_weights(cfg: DictConfig, evaluator: Any) -> tuple[list[float], list[float]]:
    """Weights that make pastiche's loss equal to ours.

    pastiche: content = w * mse(F, P); style = w * mse(F F^T / M, A / M).
    ours:     content = alpha * w_l * N * mse(F, P); style = beta * w_l / 4 * mse(F F^T / (N M), ...)
              = beta * w_l / (4 N^2) * mse(F F^T / M, ...).
    """
    channels = {name: evaluator.content_targets[name].shape[1] for name in evaluator.content_layers}
    for name in evaluator.style_layers:
        channels[name] = evaluator.style_targets[name].shape[-1]
    content = [cfg.alpha * w * channels[n] for n, w in evaluator.content_layers.items()]
    style = [cfg.beta * w / (4 * channels[n] ** 2) for n, w in evaluator.style_layers.items()]
    return content, style


def caffe_to_rgb(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    return ((image.detach().cpu() + mean) / 255.0).flip(1).clamp(0, 1)


def run_pastiche(content: Path, style: Path, size: int, style_size: int, content_w: list[float], style_w: list[float], steps: int) -> tuple[torch.Tensor, float]:
    from pastiche.pastiche import PasticheArtist

    started = time.perf_counter()
    artist = PasticheArtist(
        str(content), [str(style)], device="cpu", pooling="max", optimizer="lbfgs",
        content_layers=[f"block4_relu2"], style_layers=[f"block{i}_relu1" for i in range(1, 6)],
        content_layer_weights=content_w, style_layer_weights=style_w, content_weight=1.0,
        style_weights=[1.0], tv_weight=0.0, size=size, style_size=style_size,
    )
    for _ in range(steps):
        artist.draw()
    return caffe_to_rgb(artist.pastiche), time.perf_counter() - started


def time_to_quality(size: int, pastiche_steps: int, our_max_steps: int, mode_overrides: list[str], label: str) -> dict[str, Any]:
    cfg = compose_config(f"size={size}", *mode_overrides)
    evaluator = build_module(compose_config(f"size={size}"))  # fp32 reference evaluation
    evaluator.compute_targets()
    with tempfile.TemporaryDirectory() as folder:
        # Both tools read the very same pixels: our resized inputs, saved losslessly.
        content_png, style_png = Path(folder) / "content.png", Path(folder) / "style.png"
        save_image(evaluator.content_image, content_png)
        save_image(evaluator.style_image, style_png)
        content_w, style_w = pastiche_layer_weights(cfg, evaluator)
        theirs, their_seconds = run_pastiche(content_png, style_png, size, max(evaluator.style_image.shape[-2:]),
                                             content_w, style_w, pastiche_steps)
        their_loss = evaluator.evaluate_image(theirs)["loss/total"]

        clock = StepClock(keep_images=True)
        started = time.perf_counter()
        stylize(compose_config(f"size={size}", *mode_overrides, f"steps={our_max_steps}",
                               f"content.path={content_png}", f"style.path={style_png}"),
                Path(folder) / "ours", extra_callbacks=[clock])
    reached = None
    losses = []
    for step, (moment, image) in enumerate(zip(clock.times, clock.images), start=1):
        loss = evaluator.evaluate_image(image)["loss/total"]
        losses.append(loss)
        if loss <= their_loss:
            reached = (step, moment - started)
            break
    row = {
        "mode": label, "size": size, "pastiche_steps": pastiche_steps, "pastiche_seconds": their_seconds,
        "pastiche_final_loss": their_loss, "our_steps_to_reach": reached[0] if reached else None,
        "our_seconds_to_reach": reached[1] if reached else None,
        "ratio": reached[1] / their_seconds if reached else None,
        "our_best_loss": min(losses),
    }
    if reached:
        print(f"  {label:8s} pastiche {pastiche_steps} steps {their_seconds:6.1f} s -> J={their_loss:.4g}; "
              f"ours reaches it at step {reached[0]} in {reached[1]:6.1f} s: ratio {row['ratio']:.2f}", flush=True)
    else:
        print(f"  {label:8s} ours never reached pastiche's J={their_loss:.4g} in {our_max_steps} steps (best {min(losses):.4g})", flush=True)
    return row


# -- memory ---------------------------------------------------------------------------------


def peak_rss(size: int) -> dict[str, Any]:
    """Peak resident memory of a 2-step run in a fresh process."""
    code = (
        "import resource, subprocess, sys;"
        f"r = subprocess.run([sys.executable, '-m', 'src.run', 'size={size}', 'steps=2', 'logger=none', "
        "'device=cpu', 'checkpoint_every=0', 'hydra.run.dir=' + sys.argv[1]], capture_output=True, text=True);"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, str(Path(folder) / "run")], cwd=PROJECT_ROOT,
                             capture_output=True, text=True).stdout.split()
    returncode, kib = int(out[0]), int(out[1])
    row = {"size": size, "ok": returncode == 0, "peak_rss_gib": kib / 2**20, "seconds": time.perf_counter() - started}
    print(f"  {size:5d} px  peak RSS {row['peak_rss_gib']:6.2f} GiB  {'ok' if row['ok'] else 'FAILED'}", flush=True)
    return row


def largest_size() -> int:
    """The largest long side (4:3 image) whose estimated peak fits in available memory."""
    have, _ = available_bytes("cpu")
    low, high = 512, 32768
    while high - low > 16:
        mid = (low + high) // 2
        fits = estimated_peak_bytes(mid * 3 // 4, mid, [CONTENT_LAYER, *STYLE_LAYERS], 20) <= have
        low, high = (mid, high) if fits else (low, mid)
    return low


def main() -> None:
    quick = "--quick" in sys.argv
    torch.set_num_threads(torch.get_num_threads())
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = PROJECT_ROOT / "outputs" / "bench" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                                          "cuda": torch.cuda.is_available()}}
    print("1. per-step time against the floor (forward + backward of the truncated backbone)")
    report["per_step"] = per_step_overhead([128] if quick else [256, 512], steps=6 if quick else 12)
    print("2. time to reach pastiche's final objective (same objective, L-BFGS, content init)")
    size, steps = (128, 20) if quick else (256, 100)
    report["time_to_quality"] = [time_to_quality(size, steps, 3 * steps, [], "default")]
    print("3. memory")
    report["memory"] = [peak_rss(s) for s in ([256] if quick else [512, 1024, 2048])]
    report["largest_size_estimate"] = largest_size()
    print(f"  largest size that fits (estimate): {report['largest_size_estimate']} px")
    if torch.cuda.is_available():
        print("4. GPU: see README (run `make bench` on a GPU machine)")
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out_dir / 'bench.json'}")


if __name__ == "__main__":
    main()
