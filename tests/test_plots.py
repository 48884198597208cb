"""The pictures: loss.png, progress.gif and the contact sheet, drawn from synthetic inputs (fast)."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import OmegaConf
from PIL import Image

from src.render.contact_sheet import FAILED_FILL, GAP, MISSING_FILL, PAD
from src.render.gif import write_progress_gif
from src.render.loss_plot import plot_losses
from src.render.text import distinct_labels, fit_size, pretty_value
from src.sweeps.read import read_sweep
from src.sweeps.report import contact_sheet, write_report

COLOURS = [
    (220, 40, 40),
    (40, 180, 60),
    (40, 80, 220),
    (230, 200, 30),
    (150, 60, 200),
    (30, 200, 200),
    (250, 130, 20),
    (120, 120, 120),
]


def fake_sweep(
    root: Path, axes: list[tuple[str, str, list[str]]], failed=(), missing=(), fixed=("size=32",), image_size=(40, 30)
) -> Path:
    """A sweep folder as `python -m src.run -m` leaves it. axes: (key, as typed, as Hydra passes it to jobs)."""
    root.mkdir(parents=True, exist_ok=True)
    typed = [f"{key}={','.join(values)}" for key, values, _ in [(k, t.split(","), j) for k, t, j in axes]]
    OmegaConf.save(
        OmegaConf.create(
            {"hydra": {"overrides": {"task": [*typed, *fixed], "hydra": []}, "sweeper": {"params": None}}}
        ),
        root / "multirun.yaml",
    )
    for num, combo in enumerate(itertools.product(*[job_values for _, _, job_values in axes])):
        if num in missing:
            continue
        directory = root / str(num)
        (directory / ".hydra").mkdir(parents=True)
        overrides = [f"{key}={value}" for (key, _, _), value in zip(axes, combo)] + list(fixed)
        OmegaConf.save(OmegaConf.create(overrides), directory / ".hydra" / "overrides.yaml")
        record = {"num": num, "overrides": overrides, "wall_seconds": 1.5 + num}
        if num in failed:
            record.update(status="failed", error=f"beta=-1: must be a finite number >= 0 (job {num})")
        else:
            record.update(status="completed")
            Image.new("RGB", image_size, COLOURS[num % len(COLOURS)]).save(directory / "final.png")
            terms = {"total": 100.0 + num, "content": 10.0, "style": 90.0 + num, "tv": 0.0}
            (directory / "metrics.json").write_text(
                json.dumps(
                    {
                        "initial": {**terms, "total": 1000.0},
                        "final": terms,
                        "final_style_layers": {"relu1_1": 1.0, "relu5_1": 2.0},
                        "steps": 5,
                        "wall_seconds": 1.0,
                        "seconds_per_step": 0.2,
                        "height": image_size[1],
                        "width": image_size[0],
                        "device": "cpu",
                    }
                )
            )
        (directory / "job.json").write_text(json.dumps(record))
    return root


def centre(box):
    return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


def test_contact_sheet_2x3_grid_with_a_failed_job(tmp_path):
    sweep_dir = fake_sweep(
        tmp_path / "sweep",
        [
            ("style", "picasso,starry_night", ["picasso", "starry_night"]),
            ("beta", "1e3,1e4,1e5", ["1000.0", "10000.0", "100000.0"]),
        ],
        failed={4},
    )
    sweep = write_report(sweep_dir)
    sheet = Image.open(sweep_dir / "contact_sheet.png").convert("RGB")
    image, layout = contact_sheet(read_sweep(sweep_dir))
    assert (layout.rows, layout.cols) == (2, 3)
    assert sheet.size == image.size == layout.size
    # the grid: origin + 3 cells and 2 gaps + margin wide, title/labels + 2 cells and 1 gap + margin high
    assert layout.size[0] == layout.origin[0] + 3 * layout.cell[0] + 2 * GAP + PAD
    assert layout.size[1] == layout.origin[1] + 2 * layout.cell[1] + GAP + PAD
    assert layout.col_labels == [["beta=1e3"], ["beta=1e4"], ["beta=1e5"]]  # as typed, not 1000.0
    assert layout.row_labels == [["style=picasso"], ["style=starry_night"]]
    assert layout.box == fit_size((40, 30), (192, 192))  # tiny images are enlarged to a visible size
    for job in sweep.jobs:
        row, col = job.position
        assert (row, col) == divmod(job.num, 3)
        pixel = sheet.getpixel(centre(layout.image_box(row, col)))
        if job.num == 4:
            assert job.status == "failed"
            left, top, _, _ = layout.image_box(row, col)
            assert sheet.getpixel((left + 6, top + 6)) == FAILED_FILL
        else:
            assert pixel == COLOURS[job.num], (job.num, pixel)
    assert any("FAILED" in line for line in layout.title_lines)
    assert any("size=32" in line for line in layout.title_lines)


def test_summary_csv_one_row_per_job(tmp_path):
    sweep_dir = fake_sweep(tmp_path / "sweep", [("beta", "1e3,1e4", ["1000.0", "10000.0"])], failed={1})
    write_report(sweep_dir)
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert [row["job"] for row in rows] == ["0", "1"]
    assert [row["status"] for row in rows] == ["completed", "failed"]
    assert rows[0]["beta"] == "1000.0" and rows[0]["overrides"] == "beta=1000.0 size=32"
    assert float(rows[0]["final_total"]) == 100.0 and float(rows[0]["final_style"]) == 90.0
    assert float(rows[0]["final_style_relu5_1"]) == 2.0
    assert float(rows[0]["wall_seconds"]) == 1.5 and float(rows[1]["wall_seconds"]) == 2.5
    assert rows[1]["final_total"] == "" and "must be a finite number" in rows[1]["error"]


def test_three_swept_parameters_and_a_job_that_never_ran(tmp_path):
    sweep_dir = fake_sweep(
        tmp_path / "sweep",
        [
            ("style", "a,b", ["a", "b"]),
            ("init", "content,noise", ["content", "noise"]),
            ("seed", "1,2,3", ["1", "2", "3"]),
        ],
        missing={7},
    )
    sweep = read_sweep(sweep_dir)
    image, layout = contact_sheet(sweep)
    assert (layout.rows, layout.cols) == (4, 3)  # rows: style x init, columns: seed
    assert layout.row_labels[1] == ["style=a", "init=noise"]
    assert layout.col_labels[2] == ["seed=3"]
    never = next(job for job in sweep.jobs if job.position == (2, 1))
    assert never.status == "not run" and never.directory is None
    left, top, _, _ = layout.image_box(2, 1)
    assert image.getpixel((left + 6, top + 6)) == MISSING_FILL
    assert image.getpixel(centre(layout.image_box(3, 2))) == COLOURS[11 % len(COLOURS)]


def test_job_killed_mid_run_shows_as_no_result(tmp_path):
    sweep_dir = fake_sweep(tmp_path / "sweep", [("beta", "1,2", ["1", "2"])])
    (sweep_dir / "1" / "job.json").write_text(json.dumps({"num": 1, "status": "running"}))  # e.g. a SLURM timeout
    sweep = read_sweep(sweep_dir)
    assert [job.status for job in sweep.jobs] == ["completed", "no result"]


def test_report_command_rewrites_the_report(tmp_path):
    sweep_dir = fake_sweep(tmp_path / "sweep", [("beta", "1,2", ["1", "2"])])
    result = subprocess.run(
        [sys.executable, "-m", "src.sweep", str(sweep_dir)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "contact_sheet.png").is_file() and (sweep_dir / "summary.csv").is_file()
    assert "2 of 2 jobs completed" in result.stdout
    (tmp_path / "empty").mkdir()
    bad = subprocess.run(
        [sys.executable, "-m", "src.sweep", str(tmp_path / "empty")], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


@pytest.mark.parametrize(
    "typed, shown",
    [
        ("1000.0", "1e3"),
        ("10000.0", "1e4"),
        ("0.5", "0.5"),
        ("2.5", "2.5"),
        ("15000.0", "15000"),
        ("3", "3"),
        ("picasso", "picasso"),
        ("1e-05", "1e-5"),
    ],
)
def test_pretty_values(typed, shown):
    assert pretty_value(typed) == shown


def test_loss_plot_log_scale_with_zero_terms(tmp_path):
    history = {
        "loss/total": [(s, 100.0 / (s + 1)) for s in range(10)],
        "loss/content": [(s, 0.0 if s == 0 else 1.0 + s) for s in range(10)],
        "loss/style": [(s, 99.0 / (s + 1)) for s in range(10)],
        "loss/tv": [(s, 0.0) for s in range(10)],
        "loss/style/relu1_1": [(s, 5.0) for s in range(10)],
    }
    path = plot_losses(history, tmp_path / "loss.png", title="a title")
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (950, 500)


def test_progress_gif_enlarges_tiny_images_and_holds_the_result(tmp_path):
    frames = [(step, Image.new("RGB", (32, 24), (step * 20, 0, 0))) for step in (0, 2, 4, 6)]
    path = write_progress_gif(frames, tmp_path / "progress.gif", total_steps=6)
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.info["loop"] == 0
    assert gif.size[0] == 256  # 32 px enlarged 8x; a caption strip below
    durations = []
    for index in range(gif.n_frames):
        gif.seek(index)
        durations.append(gif.info["duration"])
        red = gif.convert("RGB").getpixel((128, 96))[0]
        assert abs(red - index * 40) <= 8
    assert durations[-1] == max(durations)


def test_failed_run_still_draws_how_far_it_got(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from src.transfer.module import StyleTransfer
    from src.transfer.runner import stylize

    original = StyleTransfer.training_step

    def fails_at_step_3(self, batch, index):
        if self.global_step >= 3:
            raise FloatingPointError("loss became nan at step 3")
        return original(self, batch, index)

    monkeypatch.setattr(StyleTransfer, "training_step", fails_at_step_3)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["size=32", "steps=6", "snapshot_every=2", "logger=none", "device=cpu"])
    with pytest.raises(Exception, match="loss became nan at step 3"):
        stylize(cfg, tmp_path)
    assert not (tmp_path / "final.png").exists()
    assert Image.open(tmp_path / "loss.png").format == "PNG"
    assert Image.open(tmp_path / "progress.gif").n_frames == 3  # steps 0 and 2, and the image at step 3


def test_big_grids_get_smaller_cells(tmp_path):
    sweep_dir = fake_sweep(
        tmp_path / "sweep",
        [("seed", ",".join(map(str, range(40))), [str(i) for i in range(40)])],
        image_size=(512, 384),
    )
    image, layout = contact_sheet(read_sweep(sweep_dir))
    assert (layout.rows, layout.cols) == (1, 40)
    assert layout.box[0] == 6000 // 40 and image.size[0] < 40 * 160 + 200


@pytest.mark.parametrize(
    "values, shown",
    [
        (["/home/me/art/collection/monet.jpg", "/home/me/art/collection/turner.jpg"], ["monet.jpg", "turner.jpg"]),
        (["/a/x/pic.jpg", "/a/y/pic.jpg"], ["x/pic.jpg", "y/pic.jpg"]),
        (['"my photo (1).jpg"', "b.jpg"], ["my photo (1).jpg", "b.jpg"]),
        (["1e3", "1e4"], ["1e3", "1e4"]),
    ],
)
def test_sheet_labels_keep_what_differs(values, shown):
    assert distinct_labels(values) == shown
