"""Real multirun sweeps, in subprocesses, at a tiny size: basic launcher, submitit (local), joblib."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from conftest import run_cli
from PIL import Image

from src.sweeps.read import read_sweep
from src.sweeps.report import contact_sheet

TINY = ["size=32", "steps=3", "device=cpu", "logger=none"]
FASTEST = ["size=32", "steps=1", "device=cpu", "logger=none"]  # where only the launching is tested


def summary(sweep_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(sweep_dir / "summary.csv", newline="")))


def check_sheet(sweep_dir: Path, rows: int, cols: int) -> None:
    sheet = Image.open(sweep_dir / "contact_sheet.png")
    _, layout = contact_sheet(read_sweep(sweep_dir))
    assert (layout.rows, layout.cols) == (rows, cols)
    assert sheet.size == layout.size


def test_basic_sweep_keeps_going_past_a_failed_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "style=picasso,starry_night",
        "beta=1e3,-1",
        "snapshot_every=2",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        timeout=300,
    )
    # the failed jobs are reported, the sweep still ends with its report, and the exit code says so
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 of 4 jobs did not complete" in result.stderr
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for completed in ("0", "2"):
        job = sweep_dir / completed
        for name in ("final.png", "metrics.json", "loss.png", "progress.gif", "job.json", "step_00000.png"):
            assert (job / name).is_file(), (completed, name)
        assert Image.open(job / "progress.gif").n_frames == 3  # steps 0 and 2, then the result at 3
        assert Image.open(job / "loss.png").format == "PNG"
    rows = summary(sweep_dir)
    assert [(r["job"], r["style"], r["beta"], r["status"]) for r in rows] == [
        ("0", "picasso", "1000.0", "completed"),
        ("1", "picasso", "-1", "failed"),
        ("2", "starry_night", "1000.0", "completed"),
        ("3", "starry_night", "-1", "failed"),
    ]
    for row in rows:
        assert row["overrides"].startswith(f"style={row['style']} beta={row['beta']}")
        assert float(row["wall_seconds"]) >= 0
    for row in (rows[0], rows[2]):
        assert float(row["final_total"]) > 0 and float(row["final_style"]) > 0 and row["final_content"] != ""
        assert int(row["steps"]) == 3
    assert rows[1]["error"].startswith("beta=-1") and "must be a finite number" in rows[1]["error"]
    check_sheet(sweep_dir, rows=2, cols=2)


def test_submitit_local_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m", "hydra/launcher=submitit_local", "beta=1e3,1e4", *FASTEST, f"hydra.sweep.dir={sweep_dir}", timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep_dir / ".submitit").is_dir()  # really went through submitit
    for job in ("0", "1"):
        assert (sweep_dir / job / "final.png").is_file() and (sweep_dir / job / "loss.png").is_file()
    rows = summary(sweep_dir)
    assert [(r["beta"], r["status"]) for r in rows] == [("1000.0", "completed"), ("10000.0", "completed")]
    check_sheet(sweep_dir, rows=1, cols=2)


def test_joblib_sweep_runs_jobs_in_parallel_processes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m", "hydra/launcher=joblib", "seed=1,2", "init=noise", *FASTEST, f"hydra.sweep.dir={sweep_dir}", timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    rows = summary(sweep_dir)
    assert [(r["seed"], r["status"]) for r in rows] == [("1", "completed"), ("2", "completed")]
    check_sheet(sweep_dir, rows=1, cols=2)


def test_slurm_launcher_options_reach_sbatch(tmp_path):
    """No cluster here: a stand-in `sbatch` keeps the script that submitit generates, then refuses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\necho "sbatch: no cluster (test)" >&2\nexit 1\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    captured = tmp_path / "job.sbatch"
    result = run_cli(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.array_parallelism=2",
        "beta=1e3,1e4,1e5",
        *FASTEST,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=120,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_CAPTURE": str(captured)},
    )
    assert result.returncode != 0 and "no cluster (test)" in result.stderr
    script = captured.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=30", "#SBATCH --array=0-2%2"):
        assert line in script, script
    assert "submitit.core._submit" in script
