"""The processes of one tiled run: which tiles each computes, and the messages between them.

One process leads (rank 0): it holds the optimiser, takes the steps and writes every file. The
others follow: for each evaluation the leader sends them a command and the image; each
process computes the tiles it owns, and the leader adds the tiles' shares and gradients up in
the order one process would (src/nst/tiling.py), so that a run on several processes gives
the single process's result, byte for byte where the arithmetic per tile is the same.

Built on a torch.distributed process group of its own (gloo on CPUs, NCCL on GPUs), not the
global one: nothing else in the process (Lightning on the leader) sees a distributed run.
"""

from __future__ import annotations

import datetime
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

Result = TypeVar("Result")
# Message tags: a gathered value's length and bytes; then one per tile's gradient.
LENGTH_TAG, BYTES_TAG, FIRST_TILE_TAG = 0, 1, 2

# What the leader asks of the followers.
STOP, LEVEL, TARGETS, TERMS, GRADIENT = range(5)
COMMAND_NAMES = ("stop", "level", "targets", "terms", "gradient")
# A follower waits for the leader's next command while the leader writes files between steps;
# a print-size step on a CPU can take minutes.
TIMEOUT = datetime.timedelta(hours=2)
# Starting: every process must have joined by then (a follower that fails to start is reported).
START_TIMEOUT = datetime.timedelta(minutes=5)


def split_by_cost(costs: Sequence[int], world: int) -> list[int]:
    """The owner rank of each item: the costliest first, each to the least loaded rank (the
    lowest on a tie), so the ranks' totals differ by at most one item's cost."""
    loads = [0] * world
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
    return owners


def to_bytes(value: Any) -> torch.Tensor:
    """A picklable value (tensors moved to the CPU) as a uint8 tensor."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def from_bytes(data: torch.Tensor, device: torch.device) -> Any:
    return torch.load(io.BytesIO(data.cpu().numpy().tobytes()), map_location=device, weights_only=False)


def on_cpu(value: Any) -> Any:
    """`value` with every tensor in it moved to the CPU (dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


class PeerLost(RuntimeError):
    """Another process of the run stopped (or cannot be reached)."""


def talks(method: Callable[..., Result]) -> Callable[..., Result]:
    """A method that exchanges messages: a process that has gone is named as such."""

    @functools.wraps(method)
    def exchange(*args: Any, **kwargs: Any) -> Result:
        try:
            return method(*args, **kwargs)
        except RuntimeError as error:
            if isinstance(error, PeerLost):
                raise
            reason = str(error).splitlines()[0][:200]
            raise PeerLost(f"another process of this run stopped ({reason})") from error

    return exchange


@dataclass
class Receiving:
    """A tensor on its way: `result()` waits for it."""

    buffer: torch.Tensor
    work: Any

    @talks
    def result(self) -> torch.Tensor:
        self.work.wait()
        return self.buffer


class TileGroup:
    """This process's place in a run on `world` processes, and the messages it exchanges."""

    def __init__(self, rank: int, world: int, address: str, port: int, device: torch.device, store: Any = None) -> None:
        """Join the run's group at `address`:`port` (rank 0 serves it), or through `store` (a
        launcher's, such as torchrun's)."""
        self.rank = rank
        self.world = world
        self.device = device
        try:
            if store is None:
                store = dist.TCPStore(address, port, world, rank == 0, timeout=START_TIMEOUT)
            else:
                store = dist.PrefixStore("nst-lab", store)
            if device.type == "cuda":
                options = dist.ProcessGroupNCCL.Options()
                options._timeout = TIMEOUT  # the public constructor's `timeout` is not in torch's stubs
                self.group: Any = dist.ProcessGroupNCCL(store, rank, world, options)
            else:
                self.group = dist.ProcessGroupGloo(store, rank, world, TIMEOUT)
        except RuntimeError as error:
            raise PeerLost(f"the {world} processes of this run could not all start ({error})") from error
        self.busy = False  # the leader is inside an exchange (a stop then cannot be sent in order)

    @property
    def leads(self) -> bool:
        return self.rank == 0

    # -- the leader's commands ---------------------------------------------------------------

    @talks
    def announce(self, command: int, *arguments: int) -> None:
        """The leader: tell the followers what comes next (they wait in `receive`)."""
        message = torch.tensor([command, *arguments, *[0] * (3 - len(arguments))], dtype=torch.int64)
        self.busy = True
        self.group.broadcast(message.to(self.device), 0).wait()

    def done(self) -> None:
        """The leader: the exchange that `announce` began is complete."""
        self.busy = False

    @talks
    def receive(self) -> tuple[int, list[int]]:
        """A follower: the leader's next command and its arguments."""
        message = torch.zeros(4, dtype=torch.int64, device=self.device)
        self.group.broadcast(message, 0).wait()
        command, *arguments = message.tolist()
        return command, arguments

    # -- tensors and values ------------------------------------------------------------------

    @talks
    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """The leader's `tensor`, on every process (followers pass a buffer of its shape)."""
        buffer = tensor.detach().to(self.device).contiguous()
        self.group.broadcast(buffer, 0).wait()
        return buffer

    @talks
    def broadcast_value(self, value: Any = None) -> Any:
        """The leader's picklable `value`, on every process (followers pass nothing)."""
        data = to_bytes(on_cpu(value)) if self.leads else torch.zeros(0, dtype=torch.uint8)
        length = self.broadcast(torch.tensor([data.numel()], dtype=torch.int64))
        if not self.leads:
            data = torch.zeros(int(length.item()), dtype=torch.uint8)
        received = self.broadcast(data)
        return value if self.leads else from_bytes(received, self.device)

    @talks
    def gather_values(self, value: dict) -> dict | None:
        """Every process's dict merged, on the leader (None on the followers)."""
        if not self.leads:
            data = to_bytes(on_cpu(value)).to(self.device)
            length = torch.tensor([data.numel()], dtype=torch.int64, device=self.device)
            self.group.send([length], 0, LENGTH_TAG).wait()
            self.group.send([data], 0, BYTES_TAG).wait()
            return None
        merged = dict(value)
        for rank in range(1, self.world):
            length = torch.zeros(1, dtype=torch.int64, device=self.device)
            self.group.recv([length], rank, LENGTH_TAG).wait()
            data = torch.zeros(int(length.item()), dtype=torch.uint8, device=self.device)
            self.group.recv([data], rank, BYTES_TAG).wait()
            merged.update(from_bytes(data, self.device))
        return merged

    @talks
    def send_to_leader(self, tensor: torch.Tensor, tag: int) -> Any:
        """A follower: start sending `tensor` to the leader; wait on the returned work before
        changing or freeing the tensor."""
        return self.group.send([tensor.contiguous()], 0, FIRST_TILE_TAG + tag)

    @talks
    def start_receive(self, rank: int, like: torch.Tensor, shape: Sequence[int], tag: int) -> Receiving:
        """The leader: start receiving a tensor of `shape` (the dtype and device of `like`) from `rank`."""
        buffer = torch.empty(tuple(shape), dtype=like.dtype, device=self.device)
        return Receiving(buffer, self.group.recv([buffer], rank, FIRST_TILE_TAG + tag))

    @talks
    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the processes, in place (exact where all but one hold zeros)."""
        self.group.allreduce([tensor]).wait()
        return tensor

    def close(self) -> None:
        if hasattr(self.group, "shutdown"):
            self.group.shutdown()


def leading(group: TileGroup | None) -> bool:
    """Whether this process computes the loss terms (a single process, or the leader)."""
    return group is None or group.leads


def owned(owners: list[int], group: TileGroup | None) -> list[int]:
    """The indices of the items this process computes."""
    rank = 0 if group is None else group.rank
    return [index for index, owner in enumerate(owners) if owner == rank]
