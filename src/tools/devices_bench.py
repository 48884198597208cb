"""`make bench ARGS="--only devices"`: one image on 2 processes against 1.

At a size where the tiles dominate a step, the median seconds per step (Lightning's loop,
the targets' pass left out) of the same tiled run on 1 process and on 2 (device.devices=2),
each process with the same number of threads (half the machine's cores on the CPU), and the
results compared byte for byte. For context, the 1-process run with all the cores, tiled
and untiled: what the same machine gives without a second process.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import torch

from src.transfer.distributed import threads_per_process


def timed_run(overrides: list[str], steps: int, threads: int, device: str) -> dict[str, Any]:
    from src.tools.bench import StepClock, compose_config, median_step_seconds, quietly
    from src.transfer.runner import stylize

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    clock = StepClock()
    try:
        with tempfile.TemporaryDirectory() as folder:
            cfg = compose_config(*overrides, f"steps={steps}", device=device)
            metrics = quietly(stylize, cfg, folder, extra_callbacks=[clock])
            digest = hashlib.sha256((Path(folder) / "final.png").read_bytes()).hexdigest()
    finally:
        torch.set_num_threads(before)
    return {
        "seconds_per_step": median_step_seconds(clock.times),
        "tiling": metrics.get("tiling"),
        "final_png_sha256": digest,
        "final_loss": metrics["final"]["total"],
    }


def devices_section(size: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    """2 processes over 1 at `size` px (4:3), `steps` steps each (the median of steps 3 on)."""
    common = [f"size={size}", "init=content", "pyramid=none"]  # one scale: every step at `size`
    threads = threads_per_process(2) if device == "cpu" else torch.get_num_threads()
    shared = timed_run([*common, "device.devices=2"], steps, threads, device)
    tile_size = shared["tiling"]["tile_size"]
    alone = timed_run([*common, f"tile_size={tile_size}"], steps, threads, device)
    report: dict[str, Any] = {
        "size": size,
        "steps": steps,
        "threads_per_process": threads,
        "one_process": alone,
        "two_processes": shared,
        "speed_up": alone["seconds_per_step"] / shared["seconds_per_step"],
        "same_image": alone["final_png_sha256"] == shared["final_png_sha256"],
    }
    print(
        f"  {size} px in tiles of {tile_size} px ({shared['tiling']['tiles']} tiles, "
        f"{shared['tiling']['tiles_per_device']} per process), {threads} thread(s) per process:"
    )
    print(f"    1 process    {alone['seconds_per_step']:7.2f} s/step")
    print(
        f"    2 processes  {shared['seconds_per_step']:7.2f} s/step   speed-up {report['speed_up']:.2f}x, "
        f"final.png {'identical' if report['same_image'] else 'DIFFERENT'}"
    )
    if device == "cpu" and threads < torch.get_num_threads():
        everything = torch.get_num_threads()
        report["one_process_all_threads"] = {
            "tiled": timed_run([*common, f"tile_size={tile_size}"], steps, everything, device),
            "untiled": timed_run([*common, "tile_size=0"], steps, everything, device),
        }
        for kind, result in report["one_process_all_threads"].items():
            print(f"    context: 1 process, {everything} threads, {kind:8s} {result['seconds_per_step']:7.2f} s/step")
    return report


if __name__ == "__main__":  # a quick look: python -m src.tools.devices_bench
    from src.cli.app import configure

    configure()
    devices_section(256, 5)
