"""`make bench ARGS="--only print"`: print sizes, tiled and untiled.

For each long side (4:3 images), a short single-scale run in a fresh process, untiled where
the memory estimate lets it run and tiled (`tile_size`) always: its peak resident memory and
seconds per step. Seconds per step are the optimisation loop's wall time over its steps (the
targets' one pass included), so short runs overstate them a little, tiled and untiled alike.
The tiling overhead is tiled / untiled seconds per step at the largest size where both ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from src.common.paths import PROJECT_ROOT

PRINT_SIZES = (1024, 2048, 4096, 8192)
TILE_SIZE = 1024


def run_once(size: int, steps: int, tile_size: int) -> dict[str, Any]:
    """A `steps`-step run at `size` px in a fresh process (tile_size 0: untiled, or refused)."""
    code = (
        "import resource, subprocess, sys;"
        "r = subprocess.run([sys.executable, '-m', 'src.run', *sys.argv[2:], 'hydra.run.dir=' + sys.argv[1]],"
        " capture_output=True, text=True);"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "print(r.stderr.strip().splitlines()[-1] if r.returncode else '')"
    )
    overrides = [
        f"size={size}",
        f"steps={steps}",
        "logger=none",
        "device=cpu",
        "checkpoint_every=0",
        "pyramid=none",
        f"tile_size={tile_size}",
    ]
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code, str(run_dir), *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.splitlines()
        returncode, kib = (int(v) for v in out[0].split())
        row: dict[str, Any] = {
            "size": size,
            "tile_size": tile_size or None,
            "ok": returncode == 0,
            "peak_rss_gib": kib / 2**20,
            "process_seconds": time.perf_counter() - started,
        }
        if returncode == 0:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            row["seconds_per_step"] = metrics["seconds_per_step"]
            row["tiles"] = metrics.get("tiling", {}).get("tiles", 1)
        else:
            row["error"] = out[1] if len(out) > 1 else ""
    return row


def print_section(sizes: list[int], steps: int = 3, tile_size: int = TILE_SIZE) -> dict[str, Any]:
    """The table: untiled and tiled rows per size, and the overhead at the largest size where both ran."""
    rows = []
    for size in sizes:
        for tile in (0, tile_size):
            row = run_once(size, steps, tile)
            rows.append(row)
            label = f"tiles of {tile} px" if tile else "untiled"
            if row["ok"]:
                print(
                    f"  {size:5d} px  {label:16s} peak RSS {row['peak_rss_gib']:6.2f} GiB  "
                    f"{row['seconds_per_step']:8.2f} s/step" + (f"  ({row['tiles']} tiles)" if tile else ""),
                    flush=True,
                )
            else:
                print(f"  {size:5d} px  {label:16s} not run: {row['error']}", flush=True)
    report: dict[str, Any] = {"rows": rows, "steps": steps}
    both = [
        size
        for size in sizes
        if all(r["ok"] for r in rows if r["size"] == size) and sum(r["size"] == size for r in rows) == 2
    ]
    if both:
        size = max(both)
        untiled, tiled = (
            next(r for r in rows if r["size"] == size and bool(r["tile_size"]) == t) for t in (False, True)
        )
        report["overhead"] = {"size": size, "ratio": tiled["seconds_per_step"] / untiled["seconds_per_step"]}
        print(f"  tiling overhead at {size} px: {report['overhead']['ratio']:.2f}x the untiled seconds per step")
    return report
