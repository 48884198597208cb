"""Unit visualisation: top-k search against brute force, a planted first-layer stimulus,
the files the command writes, its error messages, and activation maximisation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from hydra import compose, initialize_config_dir
from PIL import Image

from src.backbone.receptive_field import backbone_receptive_fields
from src.backbone.vgg import CaffePreprocess, VGG19Features, build_backbone
from src.common.errors import UserError
from src.units.activation_max import (
    ActivationMaximization,
    centred_canvas,
    maximize_units,
)
from src.units.app import choose_units, patches_per_image, visualize
from src.units.grid import PAD_COLOUR, crop_patch, layer_grid
from src.units.search import (
    LayerTopK,
    ScaledImages,
    find_images,
    search_units,
    suppression_radius,
    view_candidates,
)

EDGE_UNIT = 28  # relu1_1 unit 28 of the Caffe VGG19: dark on the left, bright on the right


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("visualize", overrides=list(overrides))


def save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray((np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("random")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(30, 40), (45, 33), (50, 50), (36, 36)]):
        smooth = rng.random((h // 3 + 1, w // 3 + 1, 3)).repeat(3, 0).repeat(3, 1)[:h, :w]
        save(0.5 * smooth + 0.5 * rng.random((h, w, 3)), folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def random_net() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features(CaffePreprocess(), last_layer="relu2_1").freeze()


# -- top-k search against brute force ----------------------------------------------------------


def all_candidates(net, dataset, layer, min_inside=0.0) -> np.ndarray:
    """Every position of every view, in scan order: (units, rows, 5) of value, image, scale, y, x."""
    field = backbone_receptive_fields(net)[layer]
    blocks = []
    with torch.no_grad():
        for index in range(len(dataset)):
            for scale, view in enumerate(dataset[index]["views"]):
                act = net(view[None], [layer])[layer][0]  # (C, H, W), one view at a time
                c, h, w = act.shape
                ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                keep = torch.tensor(
                    [[inside(field, y, x, view.shape[-2:]) >= min_inside - 1e-9 for x in range(w)] for y in range(h)]
                )
                ys, xs, values = ys[keep], xs[keep], act[:, keep]  # (P,), (P,), (C, P)
                meta = torch.stack([torch.full_like(ys, index), torch.full_like(ys, scale), ys, xs]).double()
                blocks.append(torch.cat([values.double()[:, None, :], meta.expand(c, 4, -1)], dim=1))
    return torch.cat(blocks, dim=2).permute(0, 2, 1).numpy()


def inside(field, y, x, shape):
    left, top, right, bottom = field.box(y, x)
    h, w = shape
    return (min(right, w) - max(left, 0)) * (min(bottom, h) - max(top, 0)) / field.size**2


def by_value(rows: np.ndarray) -> np.ndarray:
    """Best first; ties keep scan order (what the search does)."""
    return rows[np.argsort(-rows[:, 0], kind="stable")]


def assert_same(result, layer, expected_per_unit, k):
    top = result.layers[layer]
    for unit, expected in enumerate(expected_per_unit):
        expected = expected[:k]
        got_values = top.values[unit, : len(expected)].tolist()
        assert got_values == pytest.approx(expected[:, 0].tolist(), rel=1e-5, abs=1e-4), unit
        for rank, (value, image, scale, y, x) in enumerate(expected):
            if value > 0:  # dead units tie at 0 anywhere
                got = (
                    int(top.image[unit, rank]),
                    int(top.scale[unit, rank]),
                    int(top.y[unit, rank]),
                    int(top.x[unit, rank]),
                )
                assert got == (image, scale, y, x), (unit, rank)


def test_top_k_one_per_image_matches_brute_force(random_folder, random_net):
    dataset = ScaledImages(find_images(random_folder), random_folder, [32, 48])
    result = search_units(random_net, dataset, ["relu1_1", "relu2_1"], k=3, per_image=1, batch_size=3)
    for layer in ["relu1_1", "relu2_1"]:
        expected = []
        for rows in all_candidates(random_net, dataset, layer):
            # The first maximum of each image, in scan order.
            best = [
                rows[rows[:, 1] == image][np.argmax(rows[rows[:, 1] == image][:, 0])] for image in range(len(dataset))
            ]
            expected.append(by_value(np.stack(best)))
        assert_same(result, layer, expected, 3)
        assert len(set(result.layers[layer].image[0].tolist())) == 3  # three different images


def test_top_k_without_limits_is_the_global_top_k(random_folder, random_net):
    dataset = ScaledImages(find_images(random_folder), random_folder, [32, 48])
    result = search_units(random_net, dataset, ["relu2_1"], k=5, per_image=None, spacing=0.0, batch_size=2)
    table = all_candidates(random_net, dataset, "relu2_1")
    assert_same(result, "relu2_1", [by_value(rows) for rows in table], 5)
    # The running sums see every position: mean activation equals the brute-force mean.
    assert result.layers["relu2_1"].mean.numpy() == pytest.approx(table[:, :, 0].mean(axis=1), rel=1e-5)


def test_top_k_with_spacing_and_border_rule_matches_brute_force(random_folder, random_net):
    dataset = ScaledImages(find_images(random_folder), random_folder, [40])
    layer, k, per_image, spacing = "relu2_1", 4, 2, 0.5
    result = search_units(random_net, dataset, [layer], k=k, per_image=per_image, spacing=spacing, min_inside=1.0)
    field = backbone_receptive_fields(random_net)[layer]
    radius = suppression_radius(field, spacing)
    assert radius == 2  # ceil(0.5 * 10 / 2) - 1: centres must be >= 3 units (6 px >= 5 px) apart
    expected = []
    for rows in all_candidates(random_net, dataset, layer, min_inside=1.0):
        picks = []
        for image in range(len(dataset)):
            chosen = []
            for row in by_value(rows[rows[:, 1] == image]):
                if all(max(abs(row[3] - c[3]), abs(row[4] - c[4])) > radius for c in chosen):
                    chosen.append(row)
                    if len(chosen) == per_image:
                        break
            picks += chosen
        expected.append(by_value(np.stack(picks)))
    assert_same(result, layer, expected, k)
    # Fully inside: every kept box lies within its image.
    top = result.layers[layer]
    for unit in range(4):
        for rank in range(k):
            w, h = result.view_size(int(top.image[unit, rank]), 0)
            left, t, right, bottom = field.box(int(top.y[unit, rank]), int(top.x[unit, rank]))
            assert left >= 0 and t >= 0 and right <= w and bottom <= h


def test_view_candidates_keep_picks_apart():
    act = torch.zeros(1, 1, 9, 9)
    act[0, 0, 4, 4], act[0, 0, 4, 5], act[0, 0, 0, 0] = 5.0, 4.0, 3.0
    values, ys, xs = view_candidates(act, picks=2, radius=1)
    assert values[0, 0].tolist() == [5.0, 3.0]  # (4, 5) is next to the first pick
    assert (ys[0, 0].tolist(), xs[0, 0].tolist()) == ([4, 0], [4, 0])
    values, _, _ = view_candidates(act, picks=2, radius=0)
    assert values[0, 0].tolist() == [5.0, 4.0]


def test_per_image_auto_and_unit_choice():
    assert patches_per_image("auto", 9, 9) == 3  # the bundled images
    assert patches_per_image("auto", 9, 27) == 1
    assert patches_per_image("auto", 9, 1) == 9
    assert patches_per_image(0, 9, 5) is None and patches_per_image(2, 9, 5) == 2
    top = LayerTopK("relu1_1", 3, 1, backbone_receptive_fields()["relu1_1"])
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.1, 2.1, 2.9, 4.2], [4.0, 1.0, 3.0, 0.0]])  # unit 1 ~ unit 0
    top.add_sums((a + 10 * torch.tensor([[1.0], [1.1], [0.5]])).view(1, 3, 2, 2))
    assert choose_units(top, None, 2, distinct=1.0) == [1, 0]
    assert choose_units(top, None, 2, distinct=0.5) == [1, 2]
    assert choose_units(top, [2], 2, distinct=0.5) == [2]


# -- a planted stimulus for one known first-layer unit -------------------------------------------


def optimal_patch(weights: torch.Tensor) -> np.ndarray:
    """The 3x3 RGB patch in [0, 1] that maximises a Caffe conv1_1 filter (BGR, 0-255 inputs)."""
    rgb = weights.flip(0)  # (3, 3, 3): filter taps for R, G, B
    return (rgb > 0).float().permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory) -> tuple[Path, tuple[int, int]]:
    folder = tmp_path_factory.mktemp("planted")
    weights = build_backbone(last_layer="relu1_1").layers.conv1_1.weight[EDGE_UNIT]
    image = np.full((48, 64, 3), 0.5)
    centre = (20, 37)  # (y, x)
    image[centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 2] = optimal_patch(weights)
    save(image, folder / "b_planted.png")
    rng = np.random.default_rng(1)
    save(rng.random((48, 64, 3)), folder / "a_noise.png")
    save(
        np.asarray(Image.open(ROOT / "assets/content/chelsea.png").convert("RGB").resize((64, 43))) / 255.0,
        folder / "c_cat.png",
    )
    return folder, centre


def test_planted_edge_is_found_at_the_right_place(planted_folder):
    folder, (y, x) = planted_folder
    net = build_backbone(last_layer="relu1_1")
    dataset = ScaledImages(find_images(folder), folder, [64])
    result = search_units(net, dataset, ["relu1_1"], k=2, per_image=1)
    top = result.layers["relu1_1"]
    assert result.names[int(top.image[EDGE_UNIT, 0])] == "b_planted.png"
    assert (int(top.y[EDGE_UNIT, 0]), int(top.x[EDGE_UNIT, 0])) == (y, x)
    assert top.rf.box(y, x) == (x - 1, y - 1, x + 2, y + 2)
    assert float(top.values[EDGE_UNIT, 0]) > float(top.values[EDGE_UNIT, 1])


def test_command_writes_grids_and_topk_json(planted_folder, tmp_path):
    folder, (y, x) = planted_folder
    run_dir = tmp_path / "run"
    result = run_cli(
        f"data.dir={folder}",
        "data.scales=[64]",
        "layer_names=[relu1_1,relu2_1]",
        f"units={{relu1_1:[{EDGE_UNIT},3]}}",
        "num_units=2",
        "k=3",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
        module="src.visualize",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("relu1_1.png", "relu2_1.png", "overview.png", "topk.json"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "topk.json").read_text())
    assert report["per_image"] == 3  # auto with 3 images and k=3
    relu1 = report["layers"]["relu1_1"]
    assert relu1["receptive_field"] == {"size": 3, "stride": 1, "start": 0.0}
    assert [u["unit"] for u in relu1["units"]] == [EDGE_UNIT, 3]
    best = relu1["units"][0]["patches"][0]
    assert best["image"] == "b_planted.png" and best["position"] == [y, x]
    assert best["box"] == [x - 1, y - 1, x + 2, y + 2] == best["box_original"]
    assert [p["rank"] for p in relu1["units"][0]["patches"]] == [1, 2, 3]
    relu2 = report["layers"]["relu2_1"]
    assert len(relu2["units"]) == 2 and relu2["receptive_field"]["size"] == 10
    activations = [p["activation"] for p in relu2["units"][0]["patches"]]
    assert activations == sorted(activations, reverse=True)
    with Image.open(run_dir / "relu1_1.png") as grid:
        assert grid.mode == "RGB" and grid.width > 2 * 2 * 48  # 2 units side by side, 2 x 2 cells each


def test_patch_crop_pads_outside_the_image():
    image = Image.new("RGB", (10, 8), (255, 0, 0))
    patch = crop_patch(image, (-2, 5, 4, 11))  # 6 x 6, sticking out left and bottom
    assert patch.size == (6, 6)
    assert patch.getpixel((0, 0)) == PAD_COLOUR and patch.getpixel((5, 5)) == PAD_COLOUR
    assert patch.getpixel((2, 0)) == (255, 0, 0) and patch.getpixel((5, 2)) == (255, 0, 0)
    grid = layer_grid("t", [("unit 1", [patch] * 4, None), ("unit 2", [patch], patch)], 6, 4)
    assert grid.width > 0


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.dir=/no/such/folder"], "image folder not found"),
        (["layer_names=[relu1_1,relu9_9]"], "relu9_9"),
        (["data.scales=[8]"], "data.scales"),
        (["per_image=-1"], "per_image"),
        (["logger=csv"], "logger"),
        (["k=0"], "k=0"),
    ],
)
def test_bad_settings_are_named(overrides, message, tmp_path):
    with pytest.raises(UserError, match=message):
        visualize(compose_config(*overrides), tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures")
    with pytest.raises(UserError, match="no image files"):
        visualize(compose_config(f"data.dir={tmp_path / 'empty'}"), tmp_path / "out")


@pytest.mark.parametrize(
    "units, message",
    [
        ("[64]", "out of range for relu1_1"),
        ("[-1]", "out of range"),
        ("{relu3_1:[1]}", "not in layer_names"),
        ("[]", "no unit given"),
    ],
)
def test_unit_out_of_range(units, message, planted_folder, tmp_path):
    folder, _ = planted_folder
    cfg = compose_config(f"data.dir={folder}", "layer_names=[relu1_1]", f"units={units}")
    with pytest.raises(UserError, match=message):
        visualize(cfg, tmp_path)


def test_command_line_error_is_one_line(tmp_path):
    result = run_cli("data.dir=no_such_folder", f"hydra.run.dir={tmp_path}", module="src.visualize", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith(
        "error: data.dir: image folder not found"
    )


# -- activation maximisation ------------------------------------------------------------------------


def test_canvas_centres_the_unit():
    for layer in ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]:
        field = backbone_receptive_fields()[layer]
        size, index = centred_canvas(field, margin=4)
        left, top, right, bottom = field.box(index, index)
        assert left == top == size - right >= 4, layer


def test_activation_maximisation_beats_noise_and_real_patches():
    net = build_backbone(last_layer="relu1_1")
    settings = dict(jitter=0, blur_every=0, tv_weight=0.0, decay=0.0)
    before = ActivationMaximization(net, "relu1_1", [EDGE_UNIT, 3], **settings).final_activations()
    result = maximize_units(net, "relu1_1", [EDGE_UNIT, 3], steps=60, lr=0.1, **settings)
    assert result.images.shape == (2, 3, 11, 11) and result.crops.shape == (2, 3, 3, 3)
    assert all(after > 2 * b for after, b in zip(result.activations, before.tolist()))
    # It approaches the planted optimum: the bang-bang patch of the filter.
    weights = net.layers.conv1_1.weight[EDGE_UNIT]
    best = net(torch.from_numpy(optimal_patch(weights)).permute(2, 0, 1)[None].float(), ["relu1_1"])["relu1_1"][
        0, EDGE_UNIT, 1, 1
    ]
    assert result.activations[0] > 0.9 * float(best)
    assert math.isfinite(result.activations[1])
    # With the default regularisation too (jitter is 0 px at relu1_1's stride of 1).
    regularised = maximize_units(net, "relu1_1", [EDGE_UNIT], steps=40)
    assert regularised.activations[0] > 2 * float(before[0])
