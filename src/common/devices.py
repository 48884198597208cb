"""Which device a run uses, what it can do (native bfloat16) and how much memory it has free."""

from __future__ import annotations

import gc
import os

import torch

from src.common.errors import UserError

COMPUTE_DTYPES = ("float32", "bfloat16")  # what the backbone may compute in


def target_device(accelerator: str) -> torch.device:
    """The device of a run with `device.accelerator`: auto = a CUDA GPU if there is one, else
    the CPU (not Apple's MPS, which lacks the float64 that some controls use)."""
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device.accelerator={accelerator}: no CUDA GPU is available here; use device=cpu or device=auto"
            )
        return torch.device("cuda")
    if accelerator not in ("auto", "cpu"):
        raise UserError(f"device.accelerator={accelerator!r}: must be one of auto, cpu, gpu")
    return torch.device("cuda" if accelerator == "auto" and torch.cuda.is_available() else "cpu")


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return 0


def available_bytes(accelerator: str) -> tuple[int, str]:
    """Memory this process's run may reach. On the CPU that is what the system has available
    plus what the process already holds, since the estimate is of its whole peak (BASE_BYTES
    included): counting Python and torch, already loaded, against the rest refused sizes
    that fit."""
    if target_device(accelerator).type == "cuda":
        # An earlier run's module (a pyramid's coarser level, a sweep's last job) may still be
        # on the GPU until collected; then torch's cache of freed blocks is free too.
        gc.collect()
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        return int(free), "free GPU memory"
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + resident_bytes(), "available memory"
    except OSError:  # pragma: no cover - not Linux: no check
        pass
    return 2**62, "memory"  # pragma: no cover - not Linux


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether bf16 convolutions run natively (not emulated, which is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_compute_dtype(setting: str, device: torch.device) -> str:
    """`auto`: bfloat16 where it is fast (same quality: tests/test_speed.py), else float32."""
    if setting == "auto":
        return "bfloat16" if has_fast_bfloat16(device) else "float32"
    if setting not in COMPUTE_DTYPES:
        raise UserError(f"device.compute_dtype={setting!r}: must be one of auto, {', '.join(COMPUTE_DTYPES)}")
    return str(setting)
