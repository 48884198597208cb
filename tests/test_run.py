"""End to end: the real command line, in a subprocess, at a small size."""

import hashlib
import json

import pytest
import torch
from conftest import ROOT, read_metrics, run_cli
from hydra import compose, initialize_config_dir

from src.common.images import load_image, save_image


def test_default_command_writes_all_outputs_and_loss_falls(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("size=64", "steps=30", "snapshot_every=10", "device=cpu", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["steps"] == 30
    assert metrics["final"]["total"] < 0.5 * metrics["initial"]["total"]
    for key in ("total", "content", "style", "tv"):
        assert key in metrics["initial"] and key in metrics["final"]
    assert (
        abs(metrics["final"]["total"] - sum(metrics["final"][k] for k in ("content", "style", "tv")))
        < 1e-3 * metrics["final"]["total"]
    )
    assert metrics["height"] == 48 and metrics["width"] == 64  # tubingen is 4:3, long side 64
    assert metrics["seconds_per_step"] > 0 and metrics["device"] == "cpu"
    image = load_image(run_dir / "final.png")
    assert image.size == (64, 48)
    assert sorted(p.name for p in run_dir.glob("step_*.png")) == [f"step_{s:05d}.png" for s in (0, 10, 20, 30)]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    # csv logger: every step has every loss component, each style layer's term included
    csv_lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = csv_lines[0].split(",")
    for key in ("loss/total", "loss/content", "loss/style", "loss/tv", "loss/style/relu1_1", "loss/style/relu5_1"):
        assert key in header
    assert len(csv_lines) == 1 + 30
    rows = [dict(zip(header, line.split(","))) for line in csv_lines[1:]]
    assert [int(row["step"]) for row in rows] == list(range(30))
    assert float(rows[0]["loss/total"]) == pytest.approx(metrics["initial"]["total"], rel=1e-6)
    # the progress bar shows the main terms of each step
    # the progress bar shows step/total and the main terms, in 80 columns; the last line names the result
    assert "30/30 |" in result.stdout and " (c " in result.stdout and " s " in result.stdout
    assert "Epoch" not in result.stdout
    bar_lines = [line for line in result.stdout.replace("\r", "\n").splitlines() if " left" in line]
    assert bar_lines and max(len(line) for line in bar_lines) <= 80
    assert result.stdout.strip().splitlines()[-1].startswith(f"result: {run_dir / 'final.png'}")


def test_same_command_twice_gives_identical_image(tmp_path):
    digests = []
    for name in ("a", "b"):
        result = run_cli(
            "size=48",
            "steps=15",
            "init=noise",
            "seed=3",
            "logger=none",
            "device=cpu",
            f"hydra.run.dir={tmp_path / name}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        digests.append(hashlib.sha256((tmp_path / name / "final.png").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    run_cli(
        "size=48", "steps=15", "init=noise", "seed=4", "logger=none", "device=cpu", f"hydra.run.dir={tmp_path / 'c'}"
    )
    assert hashlib.sha256((tmp_path / "c" / "final.png").read_bytes()).hexdigest() != digests[0]


def build_module(**overrides):
    from src.transfer.build import build_module as build

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"{k}={v}" for k, v in overrides.items()])
    return build(cfg)


def test_only_trainable_parameter_is_the_image():
    module = build_module(size=40)
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trainable == ["image"]
    assert module.image.shape == (1, 3, 30, 40)
    assert sum(p.numel() for p in module.backbone.parameters()) > 1_000_000
    assert module.backbone.layer_names[-1] == "relu5_1"  # cut after the deepest layer used
    assert not module.backbone.training


def test_checkpointed_hyperparameters_are_plain():
    module = build_module(size=40)
    hparams = dict(module.hparams)
    json.dumps(hparams)  # only plain values
    assert hparams["beta"] == 1e4 and hparams["style_layers"]["relu3_1"] == 0.2


@pytest.mark.parametrize("init", ["noise", "content", "style"])
def test_init_choices(init):
    module = build_module(size=40, init=init)
    image = module.image.detach()
    assert image.min() >= 0 and image.max() <= 1
    if init == "content":
        assert torch.equal(image, module.content_image)
    else:
        assert not torch.equal(image, module.content_image)


def test_init_from_file_relative_to_launch_dir(tmp_path):
    save_image(torch.zeros(1, 3, 20, 20), tmp_path / "black.png")
    result = run_cli(
        "size=40",
        "steps=3",
        "init=image",
        "init.path=black.png",
        "logger=none",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"content.path={ROOT / 'assets/content/chelsea.png'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(tmp_path / "run")["initial"]["content"] > 0


def test_adam_and_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "size=48",
        "steps=20",
        "optimizer=adam",
        "logger=tensorboard",
        "tv_weight=10",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["final"]["total"] < metrics["initial"]["total"]
    assert metrics["final"]["tv"] > 0
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_pixels_stay_in_range_with_large_steps(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "size=40",
        "steps=10",
        "optimizer=adam",
        "optimizer.lr=0.5",
        "logger=none",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pixels = torch.tensor(list(load_image(run_dir / "final.png").getdata()))
    assert pixels.min() == 0 or pixels.max() == 255  # the optimiser pushed against the clamp, and PNG kept it valid
