"""`make bench`: how fast and how big, measured in one run on this machine.

1. Per-step overhead: seconds per optimiser step of a real run (Lightning, logging, clamping
   included) against the floor: one forward + backward of the same truncated backbone at
   the same size, timed alone.
2. Time to quality against pastiche: both minimise the same objective (same images, size,
   layers, weights, pooling, init, L-BFGS); pastiche runs N steps; we measure how long our
   run takes to reach pastiche's final objective, both evaluated by one fp32 evaluation.
3. Memory: peak RSS of short runs at 512, 1024 and 2048 px, and the largest size that fits
   (the estimate that guards every run), run for 2 steps to show that it does.
4. GPU (where there is one). 5. Print sizes (--only print).
6. Devices: one tiled image on 2 processes against 1 (src/tools/devices_bench.py).

Prints a table and writes outputs/bench/<date-time>/bench.json. Ratios, not absolute times,
are the point: every number in one table comes from the same run on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.backbone.vgg import CAFFE_BGR_MEAN, build_backbone
from src.cli.app import configure
from src.common.devices import (
    available_bytes,
    has_fast_bfloat16,
    resident_bytes,
    resolve_compute_dtype,
)
from src.common.images import save_image, size_for_long_side
from src.common.paths import PROJECT_ROOT
from src.tools.devices_bench import devices_section
from src.tools.print_bench import PRINT_SIZES, print_section
from src.transfer.build import build_module
from src.transfer.inputs import load_inputs
from src.transfer.memory import estimated_peak_bytes
from src.transfer.runner import stylize

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def compose_config(*overrides: str, device: str = "cpu") -> DictConfig:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["logger=none", f"device={device}", "checkpoint_every=0", *overrides])


class StepClock(pl.Callback):
    """Wall-clock time at the end of every step; optionally the fp32-evaluated loss of each
    step's image, its evaluation time left out of the clock, stopping once it reaches `target`."""

    def __init__(self, evaluate: Callable[[torch.Tensor], float] | None = None, target: float = 0.0) -> None:
        self.evaluate, self.target = evaluate, target
        self.started = time.perf_counter()
        self.times: list[float] = []
        self.losses: list[float] = []
        self.paused = 0.0  # seconds spent evaluating, not counted

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        synchronize(module.device.type)  # a GPU step has ended when its kernels have
        now = time.perf_counter()
        self.times.append(now - self.started - self.paused)
        if self.evaluate is not None:
            self.losses.append(self.evaluate(cast(torch.Tensor, module.image).detach()))
            trainer.should_stop = self.losses[-1] <= self.target
            self.paused += time.perf_counter() - now

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.image = cast(torch.Tensor, module.image).detach().clone()  # after the last step's time was taken


def median_step_seconds(times: list[float]) -> float:
    """Median interval between step ends, skipping the first (warm-up) steps."""
    intervals = [b - a for a, b in zip(times[2:], times[3:])]
    return statistics.median(intervals)


def floor_seconds(height: int, width: int, compute_dtype: str, device: str = "cpu", repeats: int = 7) -> float:
    """One forward + backward of the backbone cut after relu5_1 (same dtype and layout as a
    run), the loss a plain sum of the activations a run uses. The median, like a run's step."""
    backbone = build_backbone(last_layer="relu5_1", compute_dtype=compute_dtype).to(device)
    image = torch.rand(1, 3, height, width, device=device, requires_grad=True)
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        features = backbone(image, [CONTENT_LAYER, *STYLE_LAYERS])
        sum(f.sum() for f in features.values()).backward()
        synchronize(device)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings[1:])


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def quietly(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call without Lightning's progress bar on the terminal."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def our_step_seconds(overrides: list[str], steps: int, device: str = "cpu") -> tuple[float, dict[str, Any]]:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as folder:
        metrics = quietly(
            stylize, compose_config(*overrides, f"steps={steps}", device=device), folder, extra_callbacks=[clock]
        )
    return median_step_seconds(clock.times), metrics


def per_step_overhead(sizes: list[int], steps: int, device: str = "cpu") -> list[dict[str, Any]]:
    rows = []
    cases = [("lbfgs", "float32"), ("adam", "float32"), ("lbfgs", "bfloat16")]
    for size in sizes:
        for optimizer, dtype in cases:
            if dtype == "bfloat16" and not has_fast_bfloat16(torch.device(device)):
                continue
            overrides = [f"size={size}", f"optimizer={optimizer}", f"device.compute_dtype={dtype}"]
            width, height = size_for_long_side(*load_inputs(compose_config(*overrides)).content.size, size)
            # The floor just before and just after our run: a slow spell of this shared
            # machine during one of them moves the ratio less.
            before = floor_seconds(height, width, dtype, device)
            ours, metrics = our_step_seconds(overrides, steps, "gpu" if device == "cuda" else "cpu")
            floor = (before + floor_seconds(metrics["height"], metrics["width"], dtype, device)) / 2
            rows.append(
                {
                    "size": size,
                    "optimizer": optimizer,
                    "compute_dtype": dtype,
                    "seconds_per_step": ours,
                    "floor_seconds": floor,
                    "ratio": ours / floor,
                }
            )
            print(
                f"  {size:5d} px {optimizer:6s} {dtype:8s} {ours:7.3f} s/step  floor {floor:7.3f} s  "
                f"ratio {ours / floor:5.2f}",
                flush=True,
            )
    return rows


# -- time to quality against pastiche -------------------------------------------------------


def pastiche_layer_weights(cfg: DictConfig, evaluator: Any) -> tuple[list[float], list[float]]:
    """Weights that make pastiche's loss equal to ours.

    pastiche: content = w * mse(F, P); style = w * mse(F F^T / M, A / M).
    ours:     content = alpha * w_l * c_l * N * mse(F, P); style = beta * w_l * s_l / 4 * mse(F F^T / (N M), ...)
              = beta * w_l * s_l / (4 N^2) * mse(F F^T / M, ...),
    with c_l, s_l the per-layer factors of `normalization` that the evaluator computed from its
    targets (relative: 1 / ||P||^2 per position and RELATIVE_STYLE_UNIT * 4 N^2 / ||A||^2; gatys: 1),
    constants of the run, so pastiche minimises the very same function.
    """
    channels = {name: evaluator.content_targets[name].shape[1] for name in evaluator.content_layers}
    for name in evaluator.style_layers:
        channels[name] = evaluator.style_targets[name].shape[-1]
    content = [cfg.alpha * w * evaluator.content_norms[n] * channels[n] for n, w in evaluator.content_layers.items()]
    style_norms = evaluator.style_norm_sets[0]
    style = [cfg.beta * w * style_norms[n] / (4 * channels[n] ** 2) for n, w in evaluator.style_layers.items()]
    return content, style


def caffe_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """pastiche's image (BGR, 0-255, minus the mean pixel) as RGB in [0, 1]: CaffePreprocess undone."""
    mean = torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    return ((image.detach().cpu() + mean) / 255.0).flip(1).clamp(0, 1)


def pastiche_artist(
    content: Path, style: Path, size: int, style_size: int, content_w: list[float], style_w: list[float]
) -> Any:
    """pastiche's L-BFGS on our objective: the same layers, with the weights of pastiche_layer_weights."""
    from pastiche.pastiche import PasticheArtist

    return PasticheArtist(
        str(content),
        [str(style)],
        device="cpu",
        pooling="max",
        optimizer="lbfgs",
        content_layers=["block4_relu2"],
        style_layers=[f"block{i}_relu1" for i in range(1, 6)],
        content_layer_weights=content_w,
        style_layer_weights=style_w,
        content_weight=1.0,
        style_weights=[1.0],
        tv_weight=0.0,
        size=size,
        style_size=style_size,
    )


def run_pastiche(
    content: Path, style: Path, size: int, style_size: int, content_w: list[float], style_w: list[float], steps: int
) -> tuple[torch.Tensor, float]:
    def artist() -> Any:
        return pastiche_artist(content, style, size, style_size, content_w, style_w)

    # One untimed step first: torch builds its kernels for a shape on first use (about 0.4 s
    # here), and each of our timed runs follows a judged run of the same mode, so both are
    # timed warm.
    artist().draw()
    started = time.perf_counter()
    timed = artist()
    for _ in range(steps):
        timed.draw()
    return caffe_to_rgb(timed.pastiche), time.perf_counter() - started


def time_to_quality(
    size: int, pastiche_steps: int, modes: dict[str, list[str]], images: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Pastiche runs `pastiche_steps`; each of our modes runs until its image, evaluated in
    fp32, is as good (at most 3x pastiche's steps). Wall times include model load and targets.
    `images`: content/style overrides (the default run's pair if empty).

    Our time is that of a second, plain run of exactly the steps the judged run needed (CPU
    runs are deterministic, and its final image is judged again to show it): evaluating
    every step in fp32 in between slowed the steps themselves by about 5 % (caches, memory),
    and pastiche, judged once at the end, pays no such tax."""
    evaluator = build_module(compose_config(f"size={size}", "device.compute_dtype=float32", *images))  # the judge
    evaluator.compute_targets()
    judge = lambda image: evaluator.evaluate_image(image)["loss/total"]  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        # Both tools read the very same pixels: our resized inputs, saved losslessly.
        content_png, style_png = Path(folder) / "content.png", Path(folder) / "style.png"
        save_image(evaluator.content_image, content_png)
        save_image(evaluator.style_image, style_png)
        content_w, style_w = pastiche_layer_weights(compose_config(f"size={size}", *images), evaluator)
        theirs, their_seconds = run_pastiche(
            content_png, style_png, size, max(evaluator.style_image.shape[-2:]), content_w, style_w, pastiche_steps
        )
        their_loss = judge(theirs)
        print(f"  pastiche {pastiche_steps} L-BFGS steps: {their_seconds:6.1f} s, J = {their_loss:.4g}", flush=True)

        def our_run(label: str, overrides: list[str], steps: int, clock: StepClock) -> None:
            quietly(
                stylize,
                compose_config(
                    f"size={size}",
                    *overrides,
                    f"steps={steps}",
                    f"content.path={content_png}",
                    f"style.path={style_png}",
                ),
                Path(folder) / label.replace(" ", "_"),
                extra_callbacks=[clock],
            )

        for label, overrides in modes.items():
            judged = StepClock(judge, their_loss)
            our_run(label + " judged", overrides, 3 * pastiche_steps, judged)
            reached = next((step for step, loss in enumerate(judged.losses) if loss <= their_loss), None)
            row: dict[str, Any] = {
                "mode": label,
                "overrides": overrides,
                "images": list(images),
                "size": size,
                "pastiche_steps": pastiche_steps,
                "pastiche_seconds": their_seconds,
                "pastiche_loss": their_loss,
                "our_steps": None,
                "our_seconds": None,
                "ratio": None,
                "our_best_loss": min(judged.losses),
            }
            rows.append(row)
            if reached is None:
                print(
                    f"  {label:28s} never reached it in {3 * pastiche_steps} steps (best {row['our_best_loss']:.4g})",
                    flush=True,
                )
                continue
            plain = StepClock()
            our_run(label, overrides, reached + 1, plain)
            row.update(
                our_steps=reached + 1,
                our_seconds=plain.times[-1],
                ratio=plain.times[-1] / their_seconds,
                our_seconds_judged_run=judged.times[reached],
                our_loss=judge(plain.image),
            )
            print(
                f"  {label:28s} reached it at step {row['our_steps']:4d} in {row['our_seconds']:6.1f} s: "
                f"ratio {row['ratio']:.2f}"
                + (
                    "" if row["our_loss"] <= their_loss else " (BUT the timed rerun ended above it: not deterministic?)"
                ),
                flush=True,
            )
    return rows


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
        out = subprocess.run(
            [sys.executable, "-c", code, str(Path(folder) / "run")], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.split()
    returncode, kib = int(out[0]), int(out[1])
    row = {"size": size, "ok": returncode == 0, "peak_rss_gib": kib / 2**20, "seconds": time.perf_counter() - started}
    print(f"  {size:5d} px  peak RSS {row['peak_rss_gib']:6.2f} GiB  {'ok' if row['ok'] else 'FAILED'}", flush=True)
    return row


def largest_size() -> int:
    """The largest long side (4:3 image) whose estimated peak fits in available memory."""
    have = available_bytes("cpu")[0] - resident_bytes()  # a fresh process's view: this one's memory is not its
    low, high = 512, 32768
    while high - low > 16:
        mid = (low + high) // 2
        fits = (
            estimated_peak_bytes(
                mid * 3 // 4,
                mid,
                [CONTENT_LAYER, *STYLE_LAYERS],
                20,
                resolve_compute_dtype("auto", torch.device("cpu")),
            )
            <= have
        )
        low, high = (mid, high) if fits else (low, mid)
    return low


# Time to quality: each mode's overrides. `default` is what a plain run does on this machine
# (device.compute_dtype=auto: bfloat16 on CPUs with AVX512-BF16 or AMX, else float32).
MODES = {
    "torch.optim.LBFGS, float32": ["optimizer=lbfgs_torch", "device.compute_dtype=float32"],
    "float32": ["device.compute_dtype=float32"],
    "default": [],
    "fastest": ["device.compute_dtype=bfloat16"],
}


def gpu_section(quick: bool) -> dict[str, Any]:
    """The per-step table on the GPU, and 500 L-BFGS steps at 512 px (loop time and whole run)."""
    report: dict[str, Any] = {"name": torch.cuda.get_device_name()}
    # The floors run outside Lightning: give them the flags a GPU run's Trainer sets (the CPU
    # runs before left deterministic algorithms on, which slows cuDNN).
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    report["per_step"] = per_step_overhead([256, 512], steps=12, device="cuda")
    steps = 50 if quick else 500
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        # No checkpoints: the optimisation alone, as neural-style's 30 s are.
        metrics = quietly(
            stylize, compose_config("size=512", f"steps={steps}", "checkpoint_every=0", device="gpu"), folder
        )
        report["lbfgs_512px"] = {
            "steps": metrics["steps"],
            "loop_seconds": metrics["wall_seconds"],
            "run_seconds": time.perf_counter() - started,
            "compute_dtype": metrics["compute_dtype"],
            "final_loss": metrics["final"]["total"],
            "device": metrics["device"],
        }
    print(
        f"  {metrics['steps']} L-BFGS steps at 512 px ({metrics['compute_dtype']}): {metrics['wall_seconds']:.1f} s "
        f"({report['lbfgs_512px']['run_seconds']:.1f} s with model load and targets), "
        f"final J {metrics['final']['total']:.4g}",
        flush=True,
    )
    return report


SECTIONS = ("steps", "quality", "memory", "gpu", "devices")
# Opt-in (hours at 8192 px on a CPU): `--only print`.
EXTRA_SECTIONS = ("print",)


def image_override(group: str, value: str) -> str | None:
    """`--content`/`--style` as a Hydra override: an existing file, else a preset in conf/<group>/."""
    path = Path(value).expanduser()
    if path.is_file():
        return f"{group}.path={path.resolve()}"
    if (PROJECT_ROOT / "conf" / group / f"{value}.yaml").is_file():
        return f"{group}={value}"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1-minute smoke version at 128 px")
    parser.add_argument(
        "--content", help="content image for section 2: a file or a preset name (default: the default run's)"
    )
    parser.add_argument(
        "--style", help="style image for section 2: a file or a preset name (default: the default run's)"
    )
    parser.add_argument("--size", type=int, help="section 2's image size (default 256; 128 with --quick)")
    parser.add_argument(
        "--pastiche-steps", type=int, help="section 2: pastiche's L-BFGS steps (default 100; 20 with --quick)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS + EXTRA_SECTIONS,
        default=list(SECTIONS),
        help="run only these sections (default: all but print; gpu runs only where CUDA is present)",
    )
    parser.add_argument(
        "--print-sizes",
        nargs="+",
        type=int,
        default=list(PRINT_SIZES),
        help="the print section's long sides (default: 1024 2048 4096 8192)",
    )
    args = parser.parse_args(argv)
    for name in ("size", "pastiche_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    args.images = []
    for group in ("content", "style"):
        value = getattr(args, group)
        if value is not None:
            override = image_override(group, value)
            if override is None:
                presets = ", ".join(sorted(p.stem for p in (PROJECT_ROOT / "conf" / group).glob("*.yaml")))
                parser.error(f"--{group} {value}: no such file, and not a preset ({presets})")
            args.images.append(override)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure()  # the config schema and the ${asset:} resolver
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = PROJECT_ROOT / "outputs" / "bench" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_bfloat16": has_fast_bfloat16(torch.device("cpu")),
            "cuda": torch.cuda.is_available(),
        },
        "arguments": vars(args),
    }
    print(
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"native bf16 on this CPU: {report['machine']['cpu_bfloat16']}"
    )
    if "steps" in args.only:
        print("1. per-step time against the floor (forward + backward of the truncated backbone, same dtype)")
        report["per_step"] = per_step_overhead([128] if args.quick else [256, 512], steps=6 if args.quick else 12)
    if "quality" in args.only:
        size = args.size or (128 if args.quick else 256)
        steps = args.pastiche_steps or (20 if args.quick else 100)
        print(
            f"2. time to reach pastiche's objective after {steps} steps "
            f"({size} px, same objective, L-BFGS, content init)"
        )
        report["time_to_quality"] = time_to_quality(size, steps, MODES, args.images)
    if "memory" in args.only:
        print("3. memory (peak RSS of a 2-step run, default mode)")
        report["memory"] = [peak_rss(s) for s in ([256] if args.quick else [512, 1024, 2048])]
        report["largest_size_estimate"] = largest_size()
        print(f"  largest size that fits (estimate; larger runs are refused): {report['largest_size_estimate']} px")
        if not args.quick:  # and that it does run (about 3 minutes here)
            report["largest_size_run"] = peak_rss(report["largest_size_estimate"])
    if "gpu" in args.only and torch.cuda.is_available():
        print("4. GPU")
        report["gpu"] = gpu_section(args.quick)
    elif "gpu" in args.only:
        print("4. GPU: skipped, no CUDA device here")
    if "devices" in args.only:
        print("6. one image on 2 processes against 1 (device.devices=2, the same tiles, the same threads per process)")
        report["devices"] = devices_section(256 if args.quick else 1024, 4 if args.quick else 6)
    if "print" in args.only:
        print("5. print sizes: peak RSS and seconds per step, untiled and in tiles (4:3, 3-step runs, single scale)")
        report["print"] = print_section(args.print_sizes, steps=2 if args.quick else 3)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out_dir / 'bench.json'}")


if __name__ == "__main__":
    main()
