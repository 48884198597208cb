"""Reliability: bad images, kill signals, NaN, resume, never overwriting, impossible sizes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, read_metrics, run_cli
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from src.common.errors import RunStopped, UserError
from src.common.images import load_image

RUN = ["size=40", "logger=none", "device=cpu", "checkpoint_every=2"]


def valid_image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP"]), data=st.data())
def test_randomly_corrupted_files_load_as_rgb_or_fail_clearly(tmp_path, fmt, data):
    raw = bytearray(valid_image_bytes(fmt))
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    path = tmp_path / f"broken.{fmt.lower()}"
    path.write_bytes(bytes(raw[:cut]))
    try:
        image = load_image(path, role="style")
    except UserError as error:
        assert str(path) in str(error)
    else:
        assert image.mode == "RGB" and image.size[0] > 0


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(path, optimize=True)  # 400 Mpx, tiny file
    with pytest.raises(UserError, match="too large"):
        load_image(path, role="content")


def test_bad_content_file_fails_before_model_loads(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run_cli(*RUN, "steps=2", f"content.path={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: content image")
    assert str(bad) in result.stderr and "Traceback" not in result.stderr


def test_impossible_sizes_are_refused_with_the_limit(tmp_path):
    # Refused before any level of the coarse-to-fine schedule runs, naming a size that fits.
    result = run_cli("size=1000000", "logger=none", f"hydra.run.dir={tmp_path / 'a'}", timeout=120)
    assert result.returncode == 2 and "GiB" in result.stderr and "size=1000000" in result.stderr
    assert "fits" in result.stderr and not (tmp_path / "a" / "levels").exists()
    panorama = tmp_path / "panorama.png"
    Image.new("RGB", (400, 40), (90, 120, 200)).save(panorama)
    result = run_cli("size=64", f"content.path={panorama}", "logger=none", f"hydra.run.dir={tmp_path / 'b'}")
    assert result.returncode == 2 and "relu5_1" in result.stderr and "at least 16 px" in result.stderr


@pytest.mark.parametrize(
    "override, words",
    [
        ("+layers.style.relu6_1=1", ["layers.style", "relu6_1", "relu5_4"]),
        ("backbone.pooling=median", ["backbone.pooling", "max", "avg"]),
        ("init=sparkles", ["init", "noise", "content"]),
    ],
)
def test_config_mistakes_name_the_key_and_choices(tmp_path, override, words):
    result = run_cli(override, "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def start(tmp_path: Path, name: str, steps: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "src.run", *RUN, f"steps={steps}", f"hydra.run.dir={tmp_path / name}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_everything_and_resume_equals_uninterrupted(tmp_path, signum):
    steps = 24
    process = start(tmp_path, "stopped", steps)
    wait_for(tmp_path / "stopped" / "checkpoints" / "last.ckpt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=240)
    run_dir = tmp_path / "stopped"
    assert process.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "resume=" in stderr
    assert (run_dir / "interrupted.png").is_file()
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and 2 <= metrics["steps"] < steps
    assert not (run_dir / "final.png").exists()

    resumed = run_cli(f"resume={run_dir}", "logger=none", f"hydra.run.dir={tmp_path / 'resume_cmd'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_metrics(run_dir)["steps"] == steps

    straight = run_cli(*RUN, f"steps={steps}", f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert (run_dir / "final.png").read_bytes() == (tmp_path / "straight" / "final.png").read_bytes()


@pytest.mark.parametrize("hook, signum", [("setup", signal.SIGINT), ("on_fit_start", signal.SIGTERM)])
def test_a_signal_before_the_first_step_saves_a_resumable_run(tmp_path, hook, signum):
    """Ctrl-C or SIGTERM after the images and the backbone are ready but before the first step:
    during Lightning's setup (where Lightning alone would exit with code 1) or while the targets
    are computed (where Lightning's SIGTERM flag would end the run without a word): stopped at
    step 0, saved, and the run can be continued."""
    import pytorch_lightning as pl

    from src.common.errors import Interrupted
    from src.transfer.runner import stylize

    class SignalBeforeTheFirstStep(pl.Callback):
        pass

    setattr(SignalBeforeTheFirstStep, hook, lambda self, *args, **kwargs: os.kill(os.getpid(), signum))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*RUN, "steps=3"])
    before = signal.getsignal(signal.SIGINT)
    name = signal.Signals(signum).name
    with pytest.raises(Interrupted, match=f"stopped by {name} after step 0 of 3.*resume=") as raised:
        stylize(cfg, tmp_path / "run", extra_callbacks=[SignalBeforeTheFirstStep()])
    assert raised.value.exit_code == 128 + signum
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert read_metrics(tmp_path / "run")["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # the handlers from before are back
    assert stylize(cfg, tmp_path / "run", resuming=True)["steps"] == 3


def test_finished_run_folder_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(*RUN, "steps=2", f"hydra.run.dir={run_dir}").returncode == 0
    before = (run_dir / "final.png").read_bytes()
    again = run_cli(*RUN, "steps=3", "beta=1e5", f"hydra.run.dir={run_dir}")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert (run_dir / "final.png").read_bytes() == before
    assert read_metrics(run_dir)["steps"] == 2


def test_resume_of_a_folder_without_checkpoint_is_explained(tmp_path):
    result = run_cli(f"resume={tmp_path}", "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 2 and "not a run folder" in result.stderr


def test_nan_stops_with_last_good_image_and_metrics(tmp_path, monkeypatch):
    from src.transfer.module import StyleTransfer
    from src.transfer.runner import stylize

    original = StyleTransfer.losses

    def poisoned(self, image):
        terms = original(self, image)
        if self.trainer is not None and self.global_step >= 4 and torch.is_grad_enabled():
            terms["loss/total"] = terms["loss/total"] * float("nan")
        return terms

    monkeypatch.setattr(StyleTransfer, "losses", poisoned)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*RUN, "steps=10"])
    with pytest.raises(RunStopped, match="nan") as raised:
        stylize(cfg, tmp_path / "run")
    assert raised.value.exit_code == 3
    metrics = read_metrics(tmp_path / "run")
    assert (
        metrics["status"] == "failed" and metrics["steps"] == 3 and "nan" in metrics["error"]
    )  # image after 3 steps; NaN at the 4th
    assert np.isfinite(metrics["final"]["total"]) and metrics["final"]["total"] < metrics["initial"]["total"]
    image = load_image(tmp_path / "run" / "last_good.png")
    assert image.size == (40, 30)


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_unwritable_output_folder_is_one_line_and_exit_2(tmp_path, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    multirun = ["-m"] if key == "hydra.sweep.dir" else []
    result = run_cli(*multirun, f"{key}={blocker / 'run'}", "size=32", "steps=1", "logger=none")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {key}=" in result.stderr and "cannot create the output folder" in result.stderr


def test_memory_check_counts_what_the_process_already_holds():
    """The estimate is of a run's whole peak RSS (Python and torch included), so a run may
    reach what the system has available plus what the process holds already."""
    from src.common.devices import available_bytes, resident_bytes

    held = resident_bytes()
    assert held > 100 * 2**20  # torch is loaded
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        system = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    have, what = available_bytes("cpu")
    assert what == "available memory"
    assert abs(have - (system + held)) < 256 * 2**20
