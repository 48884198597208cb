"""L-BFGS for an image: one loss evaluation per step, curvature from the actual move, bounded steps.

torch.optim.LBFGS (what pastiche and most tools use) with one iteration per step differs
from this in three ways that cost it steps here:

* It builds each curvature pair from the step it *proposed*, so when the image is clamped
  to [0, 1] between steps the pairs no longer describe the function. Here s is the
  parameter's actual change since the last step, clamping included (a projected L-BFGS).
* Its first step moves by 1 / |g|_1, which depends on the loss's scale and is tiny for an
  image (about 1e-5 per pixel); the second step then extrapolates the curvature measured over
  that tiny move and overshoots (the loss jumped 20x at step 3 on the default pair). Here
  the first step moves the largest pixel by `first_step`, and no step moves any pixel by more
  than `max_step` (L-BFGS's later steps are far smaller; the cap only stops overshoots).
* Its default history of 100 pairs costs memory (100 x 2 x the image: 7.5 GB at 2048 px)
  and time (every step reads the history twice); 20 reach the same loss within 0.5 % here.

Measured (128 px, default pair, 100 steps): the same final loss as torch's L-BFGS with a clamp
and with no clamp, but reached sooner: 3.5e8 against 5.9e8 after 5 steps, 2.5e8 against
3.2e8 after 10.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


class LBFGS(torch.optim.Optimizer):
    """Limited-memory BFGS with one closure evaluation per step (no line search).

    `first_step` and `max_step` are in the parameter's units: for an image in [0, 1], the
    largest change of any pixel on the first step and on any step.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        history_size: int = 20,
        first_step: float = 0.02,
        max_step: float | None = 0.1,
    ) -> None:
        if history_size < 1:
            raise ValueError(f"history_size={history_size}: must be at least 1")
        if first_step <= 0 or (max_step is not None and max_step <= 0):
            raise ValueError("first_step and max_step must be positive")
        super().__init__(params, {"history_size": history_size, "first_step": first_step, "max_step": max_step})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        with torch.enable_grad():
            loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        # Scalars stay tensors: no host-device synchronisation inside a step on a GPU.
        state = self.state[param]
        x = param.detach().reshape(-1)
        gradient = param.grad.detach().reshape(-1)
        moves: list[torch.Tensor] = state.setdefault("moves", [])  # s: x_k - x_{k-1}
        changes: list[torch.Tensor] = state.setdefault("changes", [])  # y: g_k - g_{k-1}
        rhos: list[torch.Tensor] = state.setdefault("rhos", [])  # 1 / y's, or 0 for a rejected pair
        if "x" in state:
            move, change = x - state["x"], gradient - state["gradient"]
            curvature = change.dot(move)
            # A pair counts only where the function curves up along the move (else BFGS breaks);
            # a rejected one is kept with weight 0, so that no step waits for the answer.
            accept = curvature > 1e-10 * change.norm() * move.norm()
            rhos.append(torch.where(accept, 1.0 / curvature, torch.zeros_like(curvature)))
            moves.append(move)
            changes.append(change)
            # The initial inverse Hessian guess: s'y / y'y of the newest good pair (Nocedal & Wright, 7.20).
            state["scale"] = torch.where(accept, curvature / change.dot(change), state["scale"])
            if len(moves) > group["history_size"]:
                del moves[0], changes[0], rhos[0]
        else:
            # No curvature yet: a gradient step that moves the largest pixel by first_step.
            state["scale"] = group["first_step"] / gradient.abs().max().clamp_min(1e-30)
        direction = two_loop(gradient, moves, changes, rhos, state["scale"])
        if group["max_step"] is not None:
            direction.mul_((group["max_step"] / direction.abs().max().clamp_min(1e-30)).clamp(max=1.0))
        state["x"] = x.clone()
        state["gradient"] = gradient.clone()
        param.add_(direction.view_as(param))


def two_loop(gradient: torch.Tensor, moves: list[torch.Tensor], changes: list[torch.Tensor],
             rhos: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    """-H g, H the L-BFGS inverse Hessian of the pairs (Nocedal & Wright, algorithm 7.4)."""
    q = gradient.clone()
    alphas = []
    for move, change, rho in zip(reversed(moves), reversed(changes), reversed(rhos)):
        alpha = rho * move.dot(q)
        alphas.append(alpha)
        q.sub_(alpha * change)
    q.mul_(scale)
    for move, change, rho, alpha in zip(moves, changes, rhos, reversed(alphas)):
        beta = rho * change.dot(q)
        q.add_((alpha - beta) * move)
    return q.neg_()
