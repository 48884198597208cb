"""Print-size defaults: coarse to fine by size (pyramid=auto) and 16-bit exports from a run."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import read_metrics, run_cli
from PIL import Image

from src.nst.pyramid import auto_plan


def test_auto_pyramid_is_single_scale_up_to_724_px_then_from_512_px_in_factors_of_2():
    assert auto_plan(512, 150) == [(512, 150)]
    assert auto_plan(724, 150) == [(724, 150)]
    assert auto_plan(2048, 150) == [(512, 100), (1024, 25), (2048, 15)]
    assert auto_plan(8192, 150) == [(512, 100), (1024, 25), (2048, 15), (4096, 15), (8192, 15)]
    assert auto_plan(2048, 600) == [(512, 400), (1024, 100), (2048, 25)]
    assert auto_plan(1000, 150)[0] == (500, 100)
    assert auto_plan(3000, 10) == [(375, 10), (750, 10), (1500, 10), (3000, 10)]  # never more steps than asked


def test_default_run_above_724_px_goes_coarse_to_fine_and_exports_16_bit(tmp_path):
    result = run_cli(
        "size=760",
        "steps=2",
        "logger=none",
        "device=cpu",
        "checkpoint_every=0",
        "export=[png16,tiff16]",
        "layers=fine",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(tmp_path / "run")
    assert [(level["width"], level["steps"]) for level in metrics["pyramid"]] == [(380, 2), (760, 2)]
    eight = np.asarray(Image.open(tmp_path / "run" / "final.png").convert("RGB")).astype(np.int32)
    sixteen = cv2.imread(str(tmp_path / "run" / "final_16bit.png"), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.int32)
    assert sixteen.shape == eight.shape and sixteen.dtype == np.int32
    assert np.abs(sixteen / 257.0 - eight).max() <= 0.51  # the same image, with 256 times the levels
    assert (tmp_path / "run" / "final_16bit.tif").is_file()


def test_a_run_stopped_after_a_coarse_level_continues_from_it(tmp_path):
    import json
    import shutil

    common = [
        "size=128",
        "steps=3",
        "pyramid=factor2",
        "pyramid.steps=2",
        "logger=none",
        "device=cpu",
        "checkpoint_every=0",
        "layers=fine",
    ]
    straight = run_cli(*common, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    levels = json.loads((tmp_path / "straight" / "pyramid.json").read_text())
    assert sorted(p.name for p in (tmp_path / "straight" / "levels").iterdir()) == ["level_1.pt", "level_2.pt"]
    # A folder as a stop during level 2 leaves it: level 1's result and record, no checkpoint.
    stopped = tmp_path / "stopped"
    (stopped / "levels").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / ".hydra", stopped / ".hydra")
    shutil.copy(tmp_path / "straight" / "levels" / "level_1.pt", stopped / "levels")
    (stopped / "pyramid.json").write_text(json.dumps(levels[:1]))
    resumed = run_cli(f"resume={stopped}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "finished before, continuing from it" in resumed.stderr + resumed.stdout
    metrics = read_metrics(stopped)
    assert metrics["pyramid"][0] == levels[0]  # not run again
    assert (stopped / "final.png").read_bytes() == (tmp_path / "straight" / "final.png").read_bytes()
