"""device.devices=N: one run's tiles computed by N processes: started here, on this machine, or
by a launcher (torchrun; device.num_nodes machines of device.devices processes each).

The leader is the run's own process: it validates, reads the inputs and plans before any
other process starts, then runs as usual (Lightning on one device, every file written by
it). The followers (src/nst/distributed.py) hold no optimiser and write nothing: each builds
the same module, computes its tiles of each evaluation the leader asks for, and stops when
the run ends, however it ends.

Not Lightning's DDP strategy: it would average a gradient that is already the exact sum,
start each process by running the command again (a second run into the same folder, and
one more start per pyramid level), and have every process repeat every evaluation that the
leader's callbacks make.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import DictConfig, OmegaConf

from src.common.devices import target_device
from src.common.errors import RunStopped, UserError
from src.nst.distributed import START_TIMEOUT, STOP, TARGETS, PeerLost, TileGroup, from_bytes, to_bytes

log = logging.getLogger(__name__)
ADDRESS = "127.0.0.1"
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
CONFIG_KEY = "nst-lab/config"
PR_SET_PDEATHSIG = 1


def process_device(accelerator: str, rank: int) -> torch.device:
    device = target_device(accelerator)
    return torch.device("cuda", rank) if device.type == "cuda" else device


def threads_per_process(devices: int) -> int:
    """CPU processes share the machine's cores evenly."""
    return max(1, (os.cpu_count() or 1) // devices)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return int(probe.getsockname()[1])


def launched() -> tuple[int, int, int, int] | None:
    """(rank, world size, local rank, processes on this machine) when a launcher such as torchrun
    started this process as one of several (its RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    if not all(os.environ.get(name) for name in LAUNCHER_VARIABLES) or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", 0)), local


def launched_follower() -> bool:
    """Whether this process is a launcher's rank > 0: it serves the leader, it runs no command."""
    started = launched()
    return started is not None and started[0] != 0


def check_devices(cfg: DictConfig) -> int:
    """device.devices and device.num_nodes, checked before any process starts: the number of processes."""
    devices, nodes = cfg.device.get("devices", 1), cfg.device.get("num_nodes", 1)
    if not isinstance(devices, int) or devices < 1:
        raise UserError(f"device.devices={devices}: must be a positive integer (processes that share the tiles)")
    if not isinstance(nodes, int) or nodes < 1:
        raise UserError(f"device.num_nodes={nodes}: must be a positive integer (machines)")
    started = launched()
    if started is not None and started[1] != devices * nodes:
        raise UserError(
            f"device.devices={devices} x device.num_nodes={nodes} = {devices * nodes} processes, "
            f"but the launcher started {started[1]} (WORLD_SIZE)"
        )
    if started is None and nodes > 1:
        raise UserError(
            f"device.num_nodes={nodes}: the processes of several machines are started by a launcher, "
            "torchrun on each machine (docs/devices.md)"
        )
    if devices * nodes == 1:
        return 1
    device = target_device(cfg.device.accelerator)
    have = torch.cuda.device_count() if device.type == "cuda" else os.cpu_count() or 1
    if devices > have:
        what = "GPUs" if device.type == "cuda" else "CPU cores"
        raise UserError(f"device.devices={devices}: this machine has {have} {what}")
    if cfg.get("tile_size") == 0:
        raise UserError(f"tile_size=0 (never tile) leaves nothing to share between device.devices={devices}")
    if cfg.get("style_loss", "gram") == "histogram":
        raise UserError(
            f"style_loss=histogram cannot be computed in tiles, so not on device.devices={devices}; "
            "use style_loss=gram or mean_cov"
        )
    return devices * nodes


@dataclass
class Team:
    """The leader's group and its follower processes."""

    group: TileGroup
    processes: list[Any]
    threads: int = field(default_factory=torch.get_num_threads)  # the leader's before the run

    def close(self) -> None:
        """Stop the followers: in order when no evaluation is under way, else at once."""
        if not self.group.busy and all(process.is_alive() for process in self.processes):
            try:
                self.group.announce(STOP)
            except RuntimeError:  # a follower is gone: the others are stopped below
                pass
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
        self.group.close()
        torch.set_num_threads(self.threads)


def start_team(cfg: DictConfig, devices: int) -> Team:
    """Start devices - 1 followers of the run `cfg` and join them as the leader (rank 0); or,
    where a launcher started them, join those."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    started = launched()
    if started is not None:
        _, world, _, local = started
        store = launcher_store()
        store.set(CONFIG_KEY, bytes(to_bytes(config).numpy()))  # the followers read the run's config here
        team = Team(TileGroup(0, world, "", 0, process_device(cfg.device.accelerator, 0), store), [])
        if target_device(cfg.device.accelerator).type == "cpu":
            torch.set_num_threads(threads_per_process(local))
        log.info("%d processes share the tiles (started by the launcher)", world)
        return team
    port = free_port()
    device = target_device(cfg.device.accelerator)
    threads = threads_per_process(devices) if device.type == "cpu" else torch.get_num_threads()
    context = mp.get_context("spawn")  # not fork: safe with CUDA and with the leader's threads
    processes = [
        context.Process(target=follow, args=(rank, devices, port, config, threads), daemon=True)
        for rank in range(1, devices)
    ]
    for process in processes:
        process.start()
    team = Team(join_as_leader(processes, devices, port, process_device(cfg.device.accelerator, 0)), processes)
    torch.set_num_threads(threads)
    each = f", {threads} thread(s) each" if device.type == "cpu" else ", a GPU each"
    log.info("%d processes share the tiles%s", devices, each)
    return team


def end_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (elsewhere: a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def join_as_leader(processes: list[Any], devices: int, port: int, device: torch.device) -> TileGroup:
    """The leader's group, once every follower has joined; a follower that dies while starting
    stops the run at once (not after the start timeout)."""
    joined: dict[str, Any] = {}

    def connect() -> None:
        try:
            joined["group"] = TileGroup(0, devices, ADDRESS, port, device)
        except PeerLost as error:
            joined["error"] = error

    connecting = threading.Thread(target=connect, daemon=True)
    connecting.start()
    while connecting.is_alive():
        connecting.join(0.2)
        failed = [rank for rank, process in enumerate(processes, 1) if process.exitcode is not None]
        if failed and connecting.is_alive():
            joined["error"] = PeerLost(f"process {failed[0]} of {devices} stopped while starting (see above)")
            break
    if "group" in joined:
        return joined["group"]
    for process in processes:
        process.terminate()
    raise RunStopped(str(joined["error"]), exit_code=1)


def follow(rank: int, world: int, port: int, config: dict, threads: int) -> None:
    """A follower process started by the leader."""
    cfg = prepare_follower(config, threads)
    device = process_device(cfg.device.accelerator, rank)
    serve(cfg, TileGroup(rank, world, ADDRESS, port, device), device)


def follow_launched() -> NoReturn:
    """A follower process started by a launcher: the leader sends the config; exits with 0 or 1.

    It leaves with os._exit, without the interpreter's teardown: the process group's and the
    store's threads could otherwise be destroyed mid-flight (seen as an abort, SIGABRT, when the
    machine is busy), and a follower has no files to write."""
    code = _follow_launched()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _follow_launched() -> int:
    started = launched()
    assert started is not None
    rank, world, local_rank, local = started
    store = launcher_store()
    config = from_bytes(torch.frombuffer(bytearray(store.get(CONFIG_KEY)), dtype=torch.uint8), torch.device("cpu"))
    cfg = prepare_follower(config, threads_per_process(local))
    device = process_device(cfg.device.accelerator, local_rank)
    try:
        serve(cfg, TileGroup(rank, world, "", 0, device, store), device)
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def launcher_store() -> Any:
    """The launcher's store (torchrun's, or one that rank 0 serves at MASTER_ADDR:MASTER_PORT)."""
    store, _, _ = next(dist.rendezvous("env://", timeout=START_TIMEOUT))
    return store


def prepare_follower(config: dict, threads: int) -> DictConfig:
    """A follower's process-wide settings, as the leader's; the run's config."""
    from src.cli.app import configure

    # Ctrl-C and SIGTERM are the leader's to handle (it saves, then stops us); should the
    # leader die without stopping us, the kernel ends this process too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end_with_parent()
    logging.basicConfig(level=logging.ERROR)
    configure()
    torch.set_num_threads(threads)
    cfg = OmegaConf.create(config)
    if target_device(cfg.device.accelerator).type == "cpu":
        torch.use_deterministic_algorithms(True)  # as the leader's Trainer (src/transfer/trainer.py)
    return cfg


def serve(cfg: DictConfig, group: TileGroup, device: torch.device) -> None:
    """Build the leader's module for each level and compute this process's tiles, until told to stop."""
    from src.transfer.build import build_module
    from src.transfer.inputs import load_inputs

    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = group.rank, group.world
    module: Any = None
    level: tuple[int, int] | None = None
    try:
        inputs = load_inputs(cfg)
        while True:
            command, arguments = group.receive()
            if command == STOP:
                break
            if command == TARGETS and level != (arguments[0], arguments[1]):
                backbone = None if module is None else module.backbone
                module = None
                level = (arguments[0], arguments[1])
                module = build_module(
                    cfg, size=level[0], inputs=inputs, backbone=backbone, group=group, tile_size=level[1]
                )
                module.to(device)
            module.tiling.serve(command)
    except (UserError, PeerLost) as error:  # the leader reports the run's end; this says why
        print(f"process {rank} of {world}: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        group.close()
