"""Configs: presets exist, every bad value or key fails at start-up naming the key."""

from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from hydra import compose, initialize_config_dir

from src.common.errors import UserError
from src.transfer.validate import validate


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group", ["content", "style"])
def test_every_preset_points_to_a_bundled_image(group):
    presets = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert len(presets) >= 4
    for preset in presets:
        cfg = compose_config(f"{group}={preset}")
        assert Path(cfg[group].path).is_file(), preset


def test_defaults():
    cfg = compose_config()
    assert cfg.alpha == 1.0 and cfg.beta == 1e4
    assert list(cfg.layers.content) == ["relu4_2"]
    assert list(cfg.layers.style) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert cfg.optimizer._target_ == "src.nst.lbfgs.LBFGS"
    assert cfg.device.compute_dtype == "auto" and cfg.backbone.channels_last
    validate(cfg)


def test_choice_keys_are_typed_in_the_schema_with_the_method_s_own_names():
    from hydra.errors import ConfigCompositionException

    from src.common.devices import COMPUTE_DTYPES
    from src.nst.losses import STYLE_LOSSES
    from src.transfer.schema import ComputeDtype, StyleLoss
    from src.video.flow import PRESETS
    from src.video.schema import FlowPreset

    assert list(StyleLoss) == list(STYLE_LOSSES)
    assert list(ComputeDtype) == ["auto", *COMPUTE_DTYPES]
    assert list(FlowPreset) == list(PRESETS)
    cfg = compose_config("color=luminance", "style_loss=mean_cov", "backbone.pooling=avg")
    assert (cfg.color, cfg.style_loss, cfg.backbone.pooling) == ("luminance", "mean_cov", "avg")
    assert f"{cfg.color}" == "luminance"  # formats as its name, as a plain string would
    for override in ("color=lumiance", "init.kind=nose", "device.accelerator=tpu", "normalization=raw"):
        with pytest.raises(ConfigCompositionException):
            compose_config(override)


@pytest.mark.parametrize(
    "override, key",
    [
        ("size=8", "size"),
        ("steps=0", "steps"),
        ("beta=-1", "beta"),
        ("alpha=nan", "alpha"),
        ("snapshot_every=-2", "snapshot_every"),
        ("checkpoint_every=-1", "checkpoint_every"),
        ("+layers.style.relu9_1=0.5", "relu9_1"),
        ("layers.content.relu4_2=-1", "layers.content.relu4_2"),
        ("style_size=10", "style_size"),
    ],
)
def test_bad_values_are_named(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        validate(compose_config(override))


@pytest.mark.parametrize(
    "override, words",
    [
        ("style.path=/no/such/painting.jpg", ["/no/such/painting.jpg", "not found"]),
        ("optimizer.lrr=1", ["lrr"]),
    ],
)
def test_cli_errors_are_short_and_name_the_problem(tmp_path, override, words):
    result = run_cli(override, "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
