"""One image on several processes (device.devices=N, gloo on the CPU): the tiles are shared,
the leader adds their shares and gradients in one process's order, so the loss, the gradient
and a whole run equal a single process's, bit for bit, at the same threads per process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, read_metrics, run_cli
from hydra import compose, initialize_config_dir

from src.nst.distributed import split_by_cost
from src.transfer.build import build_module
from src.transfer.distributed import start_team, threads_per_process
from src.transfer.inputs import load_inputs

RUN = ["logger=none", "device=cpu", "checkpoint_every=0", "init=noise"]
# A single process with the threads that each of 2 processes gets: the same arithmetic per tile.
SAME_THREADS = {"OMP_NUM_THREADS": str(threads_per_process(2))}


def test_tiles_are_split_by_cost_and_every_rank_gets_one_while_there_are_enough():
    costs = [9, 7, 5, 3, 1, 1]
    owners = split_by_cost(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners) if o == rank) for rank in range(2)]
    assert abs(loads[0] - loads[1]) <= max(costs) and sorted(loads) == [13, 13]
    assert sorted(set(split_by_cost([4, 4, 4], 3))) == [0, 1, 2]
    assert split_by_cost([5], 2) == [0]  # rank 1 has no tile: it still takes part
    assert split_by_cost([], 2) == []


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*RUN, *overrides])


@pytest.mark.parametrize(
    "overrides, tile_size",
    [
        (["size=160", "device.devices=2"], 64),
        # masks and a blend (one summed group per masked style), mean_cov, TV, colour by luminance
        (
            [
                "size=144",
                "device.devices=2",
                "style_loss=mean_cov",
                "tv_weight=0.01",
                "color=luminance",
                "style.mask=top:0.4",
                "style.blend=[{path:shipwreck,mask:bottom:0.6}]",
            ],
            80,
        ),
        (["size=96", "device.devices=2"], 512),  # one tile: the follower computes nothing
    ],
)
def test_loss_and_gradient_on_two_processes_equal_one_process_bit_for_bit(overrides, tile_size):
    cfg = compose_config(*overrides)
    team = start_team(cfg, 2)  # also sets this process's threads to the followers'
    try:
        inputs = load_inputs(cfg)
        shared = build_module(cfg, inputs=inputs, group=team.group, tile_size=tile_size)
        alone = build_module(cfg, inputs=inputs, tile_size=tile_size)
        generator = torch.Generator().manual_seed(5)
        image = (alone.image.detach() + 0.1 * torch.randn(alone.image.shape, generator=generator)).clamp(0, 1)
        expected_terms, expected_gradient = alone.tiling.terms_and_gradient(image)
        terms, gradient = shared.tiling.terms_and_gradient(image)
        assert expected_gradient.abs().max() > 0
        assert torch.equal(gradient, expected_gradient)
        assert {k: v.item() for k, v in terms.items()} == {k: v.item() for k, v in expected_terms.items()}
        assert {k: v.item() for k, v in shared.tiling.terms(image).items()} == {
            k: v.item() for k, v in alone.tiling.terms(image).items()
        }
        owners = shared.tiling.owners
        assert set(owners) == ({0} if len(owners) == 1 else {0, 1})
    finally:
        team.close()
    assert all(not process.is_alive() for process in team.processes)


def run_files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if ".hydra" not in path.parts)


def test_a_run_on_two_processes_writes_what_one_process_writes_with_the_same_image(tmp_path):
    """Coarse to fine, so the followers build each level's module again."""
    common = [*RUN, "size=192", "steps=4", "pyramid=factor2", "tile_size=96"]
    two = run_cli(*common, "device.devices=2", f"hydra.run.dir={tmp_path / 'two'}")
    one = run_cli(*common, f"hydra.run.dir={tmp_path / 'one'}", env=SAME_THREADS)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-2000:] + one.stderr[-2000:]
    assert (tmp_path / "two" / "final.png").read_bytes() == (tmp_path / "one" / "final.png").read_bytes()
    assert run_files(tmp_path / "two") == run_files(tmp_path / "one")  # only the leader writes
    shared, alone = read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one")
    assert shared["final"] == alone["final"]
    assert shared["tiling"]["devices"] == 2 and sum(shared["tiling"]["tiles_per_device"]) == shared["tiling"]["tiles"]
    assert min(shared["tiling"]["tiles_per_device"]) >= 1
    assert "2 processes share the tiles" in (tmp_path / "two" / "run.log").read_text()


def test_without_a_tile_size_the_run_is_cut_in_even_tiles_and_a_size_that_fits_whole_is_warned_of(tmp_path):
    result = run_cli(*RUN, "size=256", "steps=1", "device.devices=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    tiling = read_metrics(tmp_path / "run")["tiling"]
    assert tiling["tile_size"] == 128 and tiling["tiles_per_device"] == [2, 2]
    assert "256 px fits whole on one device, which is faster" in result.stdout + result.stderr


LAYERS = ["relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


@pytest.mark.parametrize("gib, fits_whole", [(24, False), (1024, True)])
def test_a_shared_run_is_planned_in_even_tiles_that_fit_each_process_share_of_memory(monkeypatch, gib, fits_whole):
    from src.transfer import tiled

    monkeypatch.setattr(tiled, "available_bytes", lambda accelerator: (gib * 2**30, "available memory"))
    shape = tiled.RunShape(3072, 4096, LAYERS, ["relu4_2"], 20, "float32")
    plan = tiled.plan_run(shape, "cpu", 4096, None, [], devices=2)
    assert plan.tile_size in tiled.even_tile_sizes(3072, 4096, 2) and plan.fits_whole == fits_whole
    assert plan.needed_bytes <= gib * 2**30 // 2  # the CPU's memory is shared by the 2 processes
    single = tiled.plan_run(shape, "cpu", 4096, None, [])
    assert (single.tile_size is None) == fits_whole


def test_a_resume_may_use_another_number_of_processes_and_gives_the_uninterrupted_image(tmp_path):
    common = [*RUN, "size=128", "tile_size=64", "checkpoint_every=1"]
    first = run_cli(*common, "steps=3", "device.devices=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_cli("steps=6", "device.devices=1", "logger=none", f"resume={tmp_path / 'run'}", env=SAME_THREADS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run_cli(*common, "steps=6", f"hydra.run.dir={tmp_path / 'straight'}", env=SAME_THREADS)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert (tmp_path / "run" / "final.png").read_bytes() == (tmp_path / "straight" / "final.png").read_bytes()
    assert read_metrics(tmp_path / "run")["steps"] == 6


@pytest.mark.parametrize(
    "override, message",
    [
        ("device.devices=0", "device.devices=0: must be a positive integer"),
        ("device.devices=512", "device.devices=512: this machine has"),
        ("device.num_nodes=2", "device.num_nodes=2: the processes of several machines are started by a launcher"),
        ("style_loss=histogram", "style_loss=histogram cannot be computed in tiles"),
        ("content.path=no_such_photo.jpg", "no_such_photo.jpg"),
        ("tile_size=0", "tile_size=0 (never tile) leaves nothing to share"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_process_starts(tmp_path, override, message):
    devices = [] if override.startswith("device.devices") else ["device.devices=2"]
    result = run_cli(*RUN, "size=64", "steps=1", *devices, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "processes share" not in result.stdout + result.stderr


def start_long_run(run_dir) -> subprocess.Popen:
    """A long 2-process run in a session of its own, once it has saved a checkpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "src.run", *RUN, "size=192", "steps=400", "device.devices=2", "checkpoint_every=1"]
        + [f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.time() < deadline, "the run never saved a checkpoint"
        time.sleep(0.05)
    return process


def test_ctrl_c_saves_the_run_and_stops_every_process(tmp_path):
    """Ctrl-C reaches the whole process group; the followers leave it to the leader, which
    finishes its step, saves, then stops them."""
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr[-2000:]
    assert (run_dir / "interrupted.png").is_file() and "resume=" in stderr
    assert read_metrics(run_dir)["status"] == "interrupted"
    deadline = time.time() + 20  # multiprocessing's helper process ends just after the leader
    while subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True).stdout.strip():
        assert time.time() < deadline, "a process of the run was left behind"
        time.sleep(0.2)


def followers_of(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                command = cmdline.read().decode(errors="replace")
        except OSError:
            continue
        if "multiprocessing" in command and "resource_tracker" not in command:
            found.append(int(child))
    return found


def test_a_follower_that_dies_stops_the_run_in_one_line_that_says_how_to_continue(tmp_path):
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir)
    (follower,) = followers_of(process.pid)
    os.kill(follower, signal.SIGKILL)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 1, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert "another process of this run stopped" in last and f"resume={run_dir}" in last, stderr[-2000:]
    assert "Traceback" not in stderr


def test_video_runs_are_not_shared(tmp_path):
    result = run_cli("device.devices=2", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", module="src.video")
    assert result.returncode == 2 and "a video's frames are computed whole" in result.stderr, result.stderr[-2000:]


def torchrun(*arguments: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """A torchrun agent, its output in `log` (a pipe read after the other agent's could fill up
    and stop it)."""
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *arguments],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )


def test_processes_started_by_torchrun_on_two_machines_give_the_single_process_image(tmp_path):
    """Two torchrun agents on this machine stand for two machines of one process each."""
    run = [*RUN, "size=160", "steps=3", "tile_size=80", "device.devices=1", "device.num_nodes=2"]
    port = str(29000 + os.getpid() % 1000)
    nodes = [
        torchrun(
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={rank}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            "-m",
            "src.run",
            *run,
            f"hydra.run.dir={tmp_path / 'shared'}",
            log=tmp_path / f"node{rank}.log",
        )
        for rank in (1, 0)
    ]
    try:
        for node in nodes:
            node.wait(timeout=300)
    finally:
        for node in nodes:
            node.kill()  # a no-op for one that ended
    outputs = [(tmp_path / f"node{rank}.log").read_text() for rank in (1, 0)]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    alone = run_cli(*RUN, "size=160", "steps=3", "tile_size=80", f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert (tmp_path / "shared" / "final.png").read_bytes() == (tmp_path / "alone" / "final.png").read_bytes()
    assert read_metrics(tmp_path / "shared")["tiling"]["devices"] == 2
    assert "started by the launcher" in (tmp_path / "shared" / "run.log").read_text()


def test_a_launcher_that_started_another_number_of_processes_is_refused_before_any_work(tmp_path):
    launcher = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    result = run_cli(*RUN, "size=64", "steps=1", "device.devices=3", f"hydra.run.dir={tmp_path / 'run'}", env=launcher)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "= 3 processes, but the launcher started 2 (WORLD_SIZE)" in result.stderr
