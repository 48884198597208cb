"""L-BFGS for an image: one loss evaluation per step, curvature from the actual move, bounded steps.

torch.optim.LBFGS (what pastiche and most tools use) with one iteration per step differs
from this in four ways that cost it steps here:

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
* Its initial inverse Hessian is a multiple of the identity. For an image that is a poor
  guess: VGG's gradients are dominated by high spatial frequencies, so the low ones (down to
  the image's mean colour) converge slowly. Here it is a filter in the Fourier domain
  (`precondition="spectral"`), one gain per frequency band, each the band's s'y / y'y over
  recent pairs (a Barzilai-Borwein step per band): the bands learn their own step sizes.
  Before the first pair it is a fixed 1/sqrt(frequency) filter. Any positive filter keeps
  the guess symmetric positive definite, so this is L-BFGS in a rescaled basis. It cut the
  steps to reach pastiche's 100-step objective by 10-50 % on four pairs at 256 px (README).

Measured (128 px, default pair, 100 steps): the same final loss as torch's L-BFGS with a clamp
and with no clamp, but reached sooner: 3.5e8 against 5.9e8 after 5 steps, 2.5e8 against
3.2e8 after 10.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class LBFGS(torch.optim.Optimizer):
    """Limited-memory BFGS with one closure evaluation per step (no line search).

    `first_step` and `max_step` are in the parameter's units: for an image in [0, 1], the
    largest change of any pixel on the first step and on any step. `precondition="spectral"`
    (for parameters shaped (..., H, W)) learns the initial inverse Hessian per frequency band,
    `bands_per_octave` bands per octave, each averaging its pairs with weight `band_memory`
    per step of age; "none" is plain L-BFGS.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        history_size: int = 20,
        first_step: float = 0.02,
        max_step: float | None = 0.1,
        precondition: str = "spectral",
        bands_per_octave: float = 4.0,
        band_memory: float = 0.8,
    ) -> None:
        if history_size < 1:
            raise ValueError(f"history_size={history_size}: must be at least 1")
        if first_step <= 0 or (max_step is not None and max_step <= 0):
            raise ValueError("first_step and max_step must be positive")
        if precondition not in ("spectral", "none"):
            raise ValueError(f"precondition={precondition!r}: must be 'spectral' or 'none'")
        if bands_per_octave <= 0 or not 0 <= band_memory < 1:
            raise ValueError("bands_per_octave must be positive and band_memory in [0, 1)")
        super().__init__(
            params,
            {
                "history_size": history_size,
                "first_step": first_step,
                "max_step": max_step,
                "precondition": precondition,
                "bands_per_octave": bands_per_octave,
                "band_memory": band_memory,
            },
        )
        self._band_cache: dict[tuple, tuple[torch.Tensor, int, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        with torch.enable_grad():
            loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _bands(self, param: torch.Tensor, bands_per_octave: float) -> tuple[torch.Tensor, int, torch.Tensor]:
        """The band of every frequency, the band count and the filter before the first pair:
        a function of the shape, so kept here and not in the state (load_state_dict would
        cast the integer bands to the parameter's dtype)."""
        key = (tuple(param.shape), bands_per_octave, param.device)
        if key not in self._band_cache:
            bands, initial = frequency_bands(param.shape, bands_per_octave, param.device)
            self._band_cache[key] = (bands, int(bands.max()) + 1, initial)  # the count once: no host sync per step
        return self._band_cache[key]

    def _update(self, param: torch.Tensor, group: dict) -> None:
        # Scalars stay tensors: no host-device synchronisation inside a step on a GPU.
        state = self.state[param]
        x = param.detach().reshape(-1)
        assert param.grad is not None  # step() updates only parameters with a gradient
        gradient = param.grad.detach().reshape(-1)
        moves: list[torch.Tensor] = state.setdefault("moves", [])  # s: x_k - x_{k-1}
        changes: list[torch.Tensor] = state.setdefault("changes", [])  # y: g_k - g_{k-1}
        rhos: list[torch.Tensor] = state.setdefault("rhos", [])  # 1 / y's, or 0 for a rejected pair
        spectral = group["precondition"] == "spectral" and param.dim() >= 2  # images; plain L-BFGS for vectors
        if spectral:
            bands, band_count, initial = self._bands(param, group["bands_per_octave"])
            state.setdefault("filter", initial)
        guess = (lambda v: filtered(v, state["filter"], param.shape)) if spectral else (lambda v: v)
        if "x" in state:
            move, change = x - state["x"], gradient - state["gradient"]
            curvature = change.dot(move)
            # A pair counts only where the function curves up along the move (else BFGS breaks);
            # a rejected one is kept with weight 0, so that no step waits for the answer.
            accept = curvature > 1e-10 * change.norm() * move.norm()
            rhos.append(torch.where(accept, 1.0 / curvature, torch.zeros_like(curvature)))
            moves.append(move)
            changes.append(change)
            if spectral:  # from now on the scale is in the filter
                state["filter"] = update_band_gains(
                    state, bands, band_count, move.view_as(param), change.view_as(param), group["band_memory"]
                )
                state["scale"] = torch.ones_like(state["scale"])
            else:  # the initial inverse Hessian guess: s'y / y'y of the newest good pair (Nocedal & Wright, 7.20)
                state["scale"] = torch.where(accept, curvature / change.dot(change), state["scale"])
            if len(moves) > group["history_size"]:
                del moves[0], changes[0], rhos[0]
        else:
            # No curvature yet: a (filtered) gradient step that moves the largest pixel by first_step.
            state["scale"] = group["first_step"] / guess(gradient).abs().max().clamp_min(1e-30)
        direction = two_loop(gradient, moves, changes, rhos, lambda q: guess(q).mul_(state["scale"]))
        if group["max_step"] is not None:
            direction.mul_((group["max_step"] / direction.abs().max().clamp_min(1e-30)).clamp(max=1.0))
        state["x"] = x.clone()
        state["gradient"] = gradient.clone()
        param.add_(direction.view_as(param))


def two_loop(
    gradient: torch.Tensor,
    moves: list[torch.Tensor],
    changes: list[torch.Tensor],
    rhos: list[torch.Tensor],
    initial: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """-H g, H the L-BFGS inverse Hessian of the pairs built on the guess `initial`
    (Nocedal & Wright, algorithm 7.4)."""
    q = gradient.clone()
    alphas = []
    for move, change, rho in zip(reversed(moves), reversed(changes), reversed(rhos)):
        alpha = rho * move.dot(q)
        alphas.append(alpha)
        q.sub_(alpha * change)
    q = initial(q)
    for move, change, rho, alpha in zip(moves, changes, rhos, reversed(alphas)):
        beta = rho * change.dot(q)
        q.add_((alpha - beta) * move)
    return q.neg_()


# -- the spectral initial inverse Hessian -----------------------------------------------------


def frequency_bands(
    shape: torch.Size, bands_per_octave: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each coefficient of rfft2 over the last two dimensions: its band (log-spaced in the
    radial frequency, DC alone in band 0) and the filter used until the first pair, 1/sqrt(f)
    (f in cycles per image, DC counted as 0.1), normalised to mean 1."""
    height, width = shape[-2:]
    fy = torch.fft.fftfreq(height, d=1.0 / height, device=device).view(-1, 1) * (max(height, width) / height)
    fx = torch.fft.rfftfreq(width, d=1.0 / width, device=device).view(1, -1) * (max(height, width) / width)
    radius = (fy**2 + fx**2).sqrt()  # cycles per image along the long side
    bands = torch.floor(torch.log2(1.0 + radius) * bands_per_octave).long()
    initial = radius.clamp_min(0.1).rsqrt()
    return bands, initial / initial.mean()


def filtered(vector: torch.Tensor, gains: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The flat `vector` (an image of `shape`) with each spatial frequency scaled by `gains`:
    a symmetric positive definite operator for any positive gains."""
    image = vector.view(shape)
    return torch.fft.irfft2(torch.fft.rfft2(image) * gains, s=shape[-2:]).reshape(-1)


def update_band_gains(
    state: dict, bands: torch.Tensor, count: int, move: torch.Tensor, change: torch.Tensor, memory: float
) -> torch.Tensor:
    """Fold the pair (s, y) into each band's running s'y and y'y; return the filter of gains
    s'y / y'y per band (bands where the function does not curve up take the smallest gain;
    if none does, the guess so far, state["filter"] * state["scale"], stays)."""
    s, y = torch.fft.rfft2(move), torch.fft.rfft2(change)
    dims = tuple(range(s.dim() - 2))  # batch and channel dimensions share a band's gain
    sy = torch.zeros(count, device=bands.device, dtype=move.dtype).index_add_(
        0, bands.view(-1), (s * y.conj()).real.sum(dims).view(-1)
    )
    yy = torch.zeros(count, device=bands.device, dtype=move.dtype).index_add_(
        0, bands.view(-1), (y.real**2 + y.imag**2).sum(dims).view(-1)
    )
    if "band_sy" in state:
        sy, yy = memory * state["band_sy"] + sy, memory * state["band_yy"] + yy
    state["band_sy"], state["band_yy"] = sy, yy
    gains = sy / yy.clamp_min(1e-30)
    smallest = torch.where(gains > 0, gains, torch.full_like(gains, float("inf"))).min()
    gains = torch.where(gains > 0, gains, smallest)
    return torch.where(torch.isfinite(smallest), gains[bands], state["filter"] * state["scale"])
