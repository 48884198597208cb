"""Dashboards: W&B offline runs (read back from their .wandb files) and TensorBoard events."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from src.transfer import loggers

TINY = ["size=32", "steps=4", "device=cpu"]
LOSS_KEYS = {"loss/total", "loss/content", "loss/style", "loss/tv", "loss/style/relu1_1", "loss/style/relu5_1"}


# -- reading a .wandb file: a LevelDB-style log of protobuf Records ------------------------


def wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, position, block, pending = [], 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # block trailer
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            records.append(record)
            pending = b""
        elif kind in (2, 3):  # FIRST, MIDDLE
            pending += chunk
    return records


def key_of(item) -> str:
    return item.key or "/".join(item.nested_key)


class OfflineRun:
    """What an offline run recorded: run record, history rows, config, summary, exit code, media files."""

    def __init__(self, run_dir: Path) -> None:
        [self.directory] = list((run_dir / "wandb").glob("offline-run-*"))
        [wandb_file] = list(self.directory.glob("run-*.wandb"))
        self.records = wandb_records(wandb_file)
        kinds = {}
        for record in self.records:
            kinds.setdefault(record.WhichOneof("record_type"), []).append(record)
        [self.run] = [r.run for r in kinds["run"]]
        self.history = [{key_of(i): json.loads(i.value_json) for i in r.history.item} for r in kinds.get("history", [])]
        self.config = {}
        for record in kinds.get("config", []):
            self.config.update({key_of(i): json.loads(i.value_json) for i in record.config.update})
        self.summary = {}
        for record in kinds.get("summary", []):
            self.summary.update({key_of(i): json.loads(i.value_json) for i in record.summary.update})
        self.exit_code = kinds["exit"][-1].exit.exit_code if "exit" in kinds else None
        self.media = sorted(
            str(p.relative_to(self.directory / "files" / "media"))
            for p in (self.directory / "files" / "media").rglob("*.png")
        )


def test_wandb_sweep_gives_one_offline_run_per_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m", "beta=1e3,1e4", "logger=wandb", "snapshot_every=2", *TINY, f"hydra.sweep.dir={sweep_dir}", timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [OfflineRun(sweep_dir / job) for job in ("0", "1")]
    assert runs[0].run.run_id != runs[1].run.run_id  # two runs, not one merged run
    for run, beta in zip(runs, ("1e3", "1e4")):
        assert run.run.display_name == f"beta={beta}"  # named after the swept override
        assert run.run.run_group == str(sweep_dir)  # grouped by sweep
        assert run.run.project == "neural-style-transfer"
        assert run.exit_code == 0
        # every loss component at every step, against trainer/global_step
        steps = {row["trainer/global_step"]: row for row in run.history if "loss/total" in row}
        assert sorted(steps) == [0, 1, 2, 3]
        assert all(LOSS_KEYS <= set(row) for row in steps.values())
        # images: snapshots every 2 steps, the inputs, the result
        # (W&B flattens a logged wandb.Image into <key>/_type, <key>/path, ...)
        snapshot_steps = sorted(row["trainer/global_step"] for row in run.history if "snapshot/_type" in row)
        assert snapshot_steps == [0, 2, 4]
        for key in ("snapshot", "input/content", "input/style", "final"):
            assert any(row.get(f"{key}/_type") == "image-file" for row in run.history), key
        assert sum(name.startswith("images/snapshot_") for name in run.media) == 3
        assert any(name.startswith("images/input/content_") for name in run.media)
        assert any(name.startswith("images/final_") for name in run.media)
        # the full resolved config (no ${...} left), and the final metrics in the summary
        assert run.config["size"] == 32 and run.config["steps"] == 4 and float(run.config["beta"]) == float(beta)
        assert run.config["style"]["path"].endswith("starry_night.jpg")
        assert set(run.config["layers"]["style"]) >= {"relu1_1", "relu5_1"}
        metrics = json.loads((sweep_dir / ("0" if beta == "1e3" else "1") / "metrics.json").read_text())
        assert run.summary["final/total"] == pytest.approx(metrics["final"]["total"])
        assert run.summary["steps"] == 4 and "wall_seconds" in run.summary


def test_failed_run_is_finished_with_exit_code_1(tmp_path, monkeypatch):
    """A run that fails after its W&B run started (here: an error at step 2) finishes it with exit code 1."""
    from hydra import compose, initialize_config_dir

    from src.transfer.module import StyleTransfer
    from src.transfer.runner import stylize

    original = StyleTransfer.training_step

    def fails_at_step_2(self, batch, index):
        if self.global_step >= 2:
            raise RuntimeError("failed at step 2")
        return original(self, batch, index)

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(StyleTransfer, "training_step", fails_at_step_2)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["logger=wandb", *TINY])
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="failed at step 2"):
        stylize(cfg, run_dir)
    assert OfflineRun(run_dir).exit_code == 1


def test_no_login_means_offline_without_prompting(tmp_path):
    """The default (WANDB_MODE unset): no API key and no netrc -> offline; no prompt, no hang."""
    home = tmp_path / "home"
    home.mkdir()
    run_dir = tmp_path / "run"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environment.update(PYTHONPATH=str(ROOT), HOME=str(home), NETRC=str(home / "none"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.run",
            "logger=wandb",
            "size=32",
            "steps=2",
            "device=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wandb sync" in result.stdout + result.stderr  # tells how to upload it later
    assert OfflineRun(run_dir).exit_code == 0
    # the progress bar under W&B: step/total and the terms in 80 columns, no `Epoch`, no `v_num`
    bar_lines = [line for line in result.stdout.replace("\r", "\n").splitlines() if " left" in line]
    assert bar_lines and "2/2 |" in result.stdout and max(len(line) for line in bar_lines) <= 80
    assert "v_num" not in result.stdout and "Epoch" not in result.stdout


def test_choose_mode(monkeypatch, tmp_path):
    for variable in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert loggers.choose_mode() == "offline"  # no login
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    monkeypatch.setattr(loggers, "server_reachable", lambda url, timeout=3.0: False)
    assert loggers.choose_mode() == "offline"  # a login, but no network
    monkeypatch.setattr(loggers, "server_reachable", lambda url, timeout=3.0: True)
    assert loggers.choose_mode() == "online"


def test_tensorboard_gets_the_same_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    result = run_cli("logger=tensorboard", "snapshot_every=2", *TINY, f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert LOSS_KEYS <= scalars and "final/total" in scalars
    assert len(events.Scalars("loss/total")) == 4
    images = set(events.Tags()["images"])
    assert {"snapshot", "final", "input/content", "input/style"} <= images
    assert [event.step for event in events.Images("snapshot")] == [0, 2, 4]
    assert "config" in events.Tags()["tensors"] or "config/text_summary" in events.Tags()["tensors"]
    assert events.PluginTagToContent("hparams")  # the config against final/* in the HPARAMS tab
    assert (run_dir / "loss.png").is_file() and (run_dir / "progress.gif").is_file()
