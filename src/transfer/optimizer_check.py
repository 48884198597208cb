"""The optimizer's keys, checked before any image or weight is loaded.

`optimizer` is a `_target_` class and its keyword arguments (conf/optimizer/*.yaml). A key
the class does not take, a value out of its range, or one the class itself refuses is one
line naming `optimizer.<key>` and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.common.errors import UserError


def positive(value: Any) -> bool:
    return is_number(value) and value > 0


def non_negative(value: Any) -> bool:
    return is_number(value) and value >= 0


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def fraction_below_one(value: Any) -> bool:
    return is_number(value) and 0 <= value < 1


def betas(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple, ListConfig)) and len(value) == 2 and all(fraction_below_one(v) for v in value)
    )


# key -> (check, what is allowed); shared by the optimizers that take the key
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (positive, "a number > 0 (the step size)"),
    "history_size": (positive_int, "an integer >= 1 (curvature pairs kept)"),
    "first_step": (positive, "a number > 0 (the first step's largest pixel change)"),
    "max_step": (positive, "a number > 0 (the largest change of a pixel in one step)"),
    "precondition": (lambda v: v in ("spectral", "none"), "spectral or none"),
    "bands_per_octave": (positive_int, "an integer >= 1"),
    "band_memory": (fraction_below_one, "a number in [0, 1)"),
    "betas": (betas, "two numbers in [0, 1), e.g. [0.9,0.999]"),
    "eps": (positive, "a number > 0"),
    "weight_decay": (non_negative, "a number >= 0"),
    "max_iter": (positive_int, "an integer >= 1"),
    "max_eval": (lambda v: v is None or positive_int(v), "null or an integer >= 1"),
    "tolerance_grad": (non_negative, "a number >= 0"),
    "tolerance_change": (non_negative, "a number >= 0"),
    "line_search_fn": (lambda v: v in (None, "strong_wolfe"), "null or strong_wolfe"),
    "momentum": (non_negative, "a number >= 0"),
}


def optimizer_options(target: str) -> list[str]:
    """The keyword arguments the optimizer class takes (after its parameters)."""
    try:
        cls = get_class(target)
    except Exception:
        raise UserError(f"optimizer._target_={target}: no such optimizer class") from None
    signature = inspect.signature(cls.__init__)  # type: ignore[misc]
    return [
        name
        for name, p in signature.parameters.items()
        if name not in ("self", "params") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def check_optimizer(cfg: DictConfig) -> None:
    """Every optimizer key: known to its class, in range, and accepted by the class itself."""
    optimizer = cfg.optimizer
    target = str(optimizer.get("_target_") or "")
    if not target:
        raise UserError("optimizer: no optimizer class (_target_); choose optimizer=lbfgs, lbfgs_torch or adam")
    options = optimizer_options(target)
    name = target.rsplit(".", 1)[-1]
    for key in optimizer:
        key = str(key)
        if key.startswith("_") and key.endswith("_"):
            continue
        if key not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserError(f"optimizer.{key}: {name} has no such option{hint} (its options: {', '.join(options)})")
        value = optimizer[key]
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        rule = RULES.get(key)
        if rule is not None and not rule[0](value):
            raise UserError(f"optimizer.{key}={value}: must be {rule[1]}")
    try:  # what the class itself refuses (torch's checks, combinations)
        instantiate(optimizer)([torch.zeros(1, requires_grad=True)])
    except (TypeError, ValueError) as error:
        raise UserError(f"optimizer ({name}): {error}") from None
