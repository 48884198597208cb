"""The speed-ups (issue 6) keep the numbers: each fast path against the plain one."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir

from src.backbone.vgg import build_backbone
from src.common.devices import has_fast_bfloat16, resolve_compute_dtype
from src.common.errors import UserError
from src.nst.lbfgs import LBFGS, filtered, frequency_bands
from src.nst.losses import gram_matrix
from src.transfer.build import build_module
from src.transfer.runner import stylize

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["logger=none", "device=cpu", "checkpoint_every=0", *overrides])


def test_channels_last_gives_the_same_activations():
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    plain = build_backbone(last_layer="relu5_1", channels_last=False)(image, LAYERS)
    fast = build_backbone(last_layer="relu5_1", channels_last=True)(image, LAYERS)
    for name in LAYERS:
        assert fast[name].is_contiguous(memory_format=torch.channels_last)
        # fp32 sums in another order: rounding-level differences only
        assert ((fast[name] - plain[name]).norm() / plain[name].norm()).item() < 1e-5, name


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_matrix_value_and_gradient_match_autograd(channels_last):
    features = torch.randn(1, 12, 5, 7, dtype=torch.float64)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    features.requires_grad_(True)
    flat = features.reshape(1, 12, 35)
    reference = torch.bmm(flat, flat.transpose(1, 2)) / (12 * 35)
    torch.testing.assert_close(gram_matrix(features), reference)
    weights = torch.randn(1, 12, 12, dtype=torch.float64)  # not symmetric: the backward must symmetrise
    (ours,) = torch.autograd.grad((gram_matrix(features) * weights).sum(), features)
    (theirs,) = torch.autograd.grad((reference * weights).sum(), features)
    torch.testing.assert_close(ours, theirs)
    assert torch.autograd.gradcheck(gram_matrix, (features,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_gram_is_float32_and_its_backward_loses_only_rounding(channels_last):
    """bf16 activations: the Gram matrix is the float32 one of the same values; its backward
    runs in bf16 and differs from the float32 backward by about bf16's rounding."""
    features = torch.randn(1, 64, 24, 20).bfloat16()
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    wide = features.float().requires_grad_(True)
    features.requires_grad_(True)
    gram = gram_matrix(features)
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram, gram_matrix(wide), rtol=1e-6, atol=1e-7)
    weights = torch.randn(1, 64, 64)
    (ours,) = torch.autograd.grad((gram * weights).sum(), features)
    (theirs,) = torch.autograd.grad((gram_matrix(wide) * weights).sum(), wide)
    assert ours.dtype == torch.bfloat16
    error = ((ours.float() - theirs).norm() / theirs.norm()).item()
    assert 0 < error < 1e-2, error


def test_bfloat16_losses_keep_their_gradient_with_activations_left_in_bfloat16():
    """The run hands the Gram loss bf16 activations (upcast=False): the loss is the same and
    the gradient moves by far less than bf16's own error against float32 (6 % here)."""
    module = build_module(config("size=64", "device.compute_dtype=bfloat16"))
    module.compute_targets()
    image = module.image.detach().clone().add_(0.05 * torch.randn_like(module.image)).clamp_(0, 1)
    results = {}
    for upcast in (True, False):
        forward = module.backbone.forward
        module.backbone.forward = lambda *args, _f=forward, _up=upcast, **kwargs: _f(*args, **{**kwargs, "upcast": _up})
        x = image.clone().requires_grad_(True)
        loss = module.losses(x)["loss/total"]
        results[upcast] = loss.item(), torch.autograd.grad(loss, x)[0]
        module.backbone.forward = forward
    (wide_loss, wide_grad), (loss, grad) = results[True], results[False]
    assert loss == pytest.approx(wide_loss, rel=1e-6)
    assert 0 < ((grad - wide_grad).norm() / wide_grad.norm()).item() < 1e-2


def test_losses_match_the_plain_path():
    """The run's objective and its gradient with every speed-up (channels_last, one-matmul
    Gram backward) against the plain layout."""
    values = {}
    for channels_last in (False, True):
        module = build_module(
            config("size=64", "device.compute_dtype=float32", f"backbone.channels_last={channels_last}")
        )
        image = (
            module.image.detach().clone().add_(0.05 * torch.randn_like(module.image)).clamp_(0, 1).requires_grad_(True)
        )
        terms = module.losses(image)
        (gradient,) = torch.autograd.grad(terms["loss/total"], image)
        values[channels_last] = ({k: v.item() for k, v in terms.items()}, gradient)
    (plain, plain_gradient), (fast, fast_gradient) = values[False], values[True]
    for key in plain:
        assert fast[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-3), key
    torch.testing.assert_close(fast_gradient, plain_gradient, rtol=1e-3, atol=1e-3 * plain_gradient.abs().max().item())


def quadratic(dimension: int = 30, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dimension, dimension, generator=generator, dtype=torch.float64))
    hessian = basis @ torch.diag(torch.logspace(0, 2, dimension, dtype=torch.float64)) @ basis.T
    target = torch.rand(dimension, generator=generator, dtype=torch.float64)
    return hessian, target


def minimise(optimizer_factory, hessian, target, steps: int, clamp: tuple[float, float] | None = None):
    x = torch.full_like(target, 0.5).requires_grad_(True)
    optimizer = optimizer_factory([x])

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * (x - target) @ hessian @ (x - target)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
        if clamp:
            with torch.no_grad():
                x.clamp_(*clamp)
    return x.detach()


def test_lbfgs_solves_a_quadratic():
    hessian, target = quadratic()
    x = minimise(lambda p: LBFGS(p, history_size=30, max_step=None), hessian, target, steps=80)
    torch.testing.assert_close(x, target, atol=1e-6, rtol=0)


def test_lbfgs_first_and_largest_steps_are_bounded():
    hessian, target = quadratic()
    x = torch.full_like(target, 0.5).requires_grad_(True)
    optimizer = LBFGS([x], first_step=0.01, max_step=0.05)
    previous = x.detach().clone()
    for step in range(10):
        optimizer.zero_grad()
        optimizer.step(lambda: (0.5 * (x - target) @ hessian @ (x - target)).backward() or torch.zeros(()))
        moved = (x.detach() - previous).abs().max().item()
        assert moved <= (0.01 if step == 0 else 0.05) + 1e-12
        if step == 0:
            assert moved == pytest.approx(0.01)
        previous = x.detach().clone()


def test_lbfgs_with_clamping_finds_the_constrained_minimum():
    """Curvature from the actual move keeps L-BFGS right when the parameter is clamped between
    steps; the answer of a separable problem clamped to the box is the clamped target."""
    target = torch.tensor([-0.5, 0.2, 0.7, 1.6], dtype=torch.float64)
    hessian = torch.diag(torch.tensor([1.0, 3.0, 10.0, 30.0], dtype=torch.float64))
    x = minimise(lambda p: LBFGS(p, max_step=None), hessian, target, steps=60, clamp=(0.0, 1.0))
    torch.testing.assert_close(x, target.clamp(0, 1), atol=1e-5, rtol=0)


def test_spectral_filter_is_symmetric_positive_definite():
    """Any positive gains per band give a symmetric positive definite operator whose Rayleigh
    quotients lie between the smallest and largest gain (odd and even sizes: Nyquist edges)."""
    generator = torch.Generator().manual_seed(0)
    for shape in (torch.Size([1, 3, 12, 17]), torch.Size([1, 3, 9, 8])):
        bands, initial = frequency_bands(shape, 4.0, torch.device("cpu"))
        assert bands[0, 0] == 0 and (bands.view(-1)[1:] > 0).all() and initial[0, 0] == initial.max()
        gains = (torch.rand(int(bands.max()) + 1, generator=generator, dtype=torch.float64) + 0.1)[bands]
        u, v = torch.randn(2, shape.numel(), generator=generator, dtype=torch.float64)
        assert (u @ filtered(v, gains, shape)).item() == pytest.approx((filtered(u, gains, shape) @ v).item())
        quotient = (v @ filtered(v, gains, shape) / (v @ v)).item()
        assert gains.min().item() <= quotient <= gains.max().item()


def band_quadratic(shape: torch.Size):
    """0.5 (x - t)' H (x - t), H a filter with curvatures from 1 to 1000 across the bands:
    slow low frequencies, as VGG's gradients make them."""
    bands, _ = frequency_bands(shape, 4.0, torch.device("cpu"))
    curvature = torch.logspace(0, 3, int(bands.max()) + 1, dtype=torch.float64)[bands]
    target = torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(precondition: str, steps: int) -> float:
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        optimizer = LBFGS([x], precondition=precondition, max_step=None, history_size=5)

        def closure():
            optimizer.zero_grad()
            difference = (x - target).reshape(-1)
            loss = 0.5 * difference @ filtered(difference, curvature, shape)
            loss.backward()
            return loss

        for _ in range(steps):
            optimizer.step(closure)
        return (x.detach() - target).abs().max().item()

    return run


def test_spectral_lbfgs_learns_a_band_hessian():
    """With a Hessian that is a band filter, the learned gains are its inverse after one pair:
    the spectral L-BFGS solves a 1000x ill-conditioned problem in a few steps, where plain
    L-BFGS with the same history is still far off."""
    run = band_quadratic(torch.Size([1, 3, 16, 24]))
    assert run("spectral", 4) < 1e-6
    assert run("none", 4) > 1e-2
    assert run("none", 30) < run("none", 4)  # plain L-BFGS does converge, slowly


def test_spectral_precondition_reaches_a_lower_loss_in_a_real_run(tmp_path):
    """On a real pair from the content image (the bench's setting), the same steps end lower."""
    pair = ("size=128", "content=tubingen", "style=picasso_nude", "steps=30")
    plain = final_fp32_loss(tmp_path, "plain", "device.compute_dtype=float32", "optimizer.precondition=none", pair=pair)
    spectral = final_fp32_loss(tmp_path, "spectral", "device.compute_dtype=float32", pair=pair)
    assert spectral < 0.97 * plain


@pytest.mark.parametrize("shape", [(30,), (1, 3, 2, 5)], ids=["vector", "image (spectral)"])
def test_lbfgs_state_survives_a_state_dict_round_trip(shape):
    hessian, target = quadratic()
    target = target.view(shape)

    def run(optimizer_factory, x, steps):
        optimizer = optimizer_factory(x)
        closure = lambda: (0.5 * (x - target).view(-1) @ hessian @ (x - target).view(-1)).backward() or torch.zeros(())  # noqa: E731
        for _ in range(steps):
            optimizer.zero_grad()
            optimizer.step(closure)
        return optimizer

    straight = torch.full_like(target, 0.5).requires_grad_(True)
    run(lambda x: LBFGS([x]), straight, 12)
    x = torch.full_like(target, 0.5).requires_grad_(True)
    state = run(lambda x: LBFGS([x]), x, 6).state_dict()
    if len(shape) == 4:
        assert "band_sy" in state["state"][0]  # the learned filter is part of the state
    run(lambda x: _loaded(x, state), x, 6)
    torch.testing.assert_close(x.detach(), straight.detach())


def _loaded(x, state):
    optimizer = LBFGS([x])
    optimizer.load_state_dict(state)
    return optimizer


def final_fp32_loss(tmp_path, name: str, *overrides: str, pair: tuple[str, ...] = ("size=64", "steps=40")) -> float:
    """A short real run; its final image judged by one fp32 evaluation of the same objective."""
    stylize(config(*pair, *overrides), tmp_path / name)
    from src.common.images import load_tensor

    judge = build_module(config(*pair, "device.compute_dtype=float32"))
    return judge.evaluate_image(load_tensor(tmp_path / name / "final.png"))["loss/total"]


def test_our_lbfgs_beats_torch_lbfgs_in_the_same_steps(tmp_path):
    ours = final_fp32_loss(tmp_path, "ours", "device.compute_dtype=float32")
    theirs = final_fp32_loss(tmp_path, "torch", "device.compute_dtype=float32", "optimizer=lbfgs_torch")
    assert ours < theirs


@pytest.mark.skipif(not has_fast_bfloat16(torch.device("cpu")), reason="bf16 is emulated (slow) on this CPU")
def test_bfloat16_run_reaches_the_float32_quality(tmp_path):
    exact = final_fp32_loss(tmp_path, "fp32", "device.compute_dtype=float32")
    fast = final_fp32_loss(tmp_path, "bf16", "device.compute_dtype=bfloat16")
    assert fast == pytest.approx(exact, rel=0.05)


def test_compute_dtype_auto_picks_bfloat16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_compute_dtype("auto", torch.device("cpu")) == "float32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_compute_dtype("auto", torch.device("cpu")) == "bfloat16"
    assert resolve_compute_dtype("float32", torch.device("cpu")) == "float32"
    with pytest.raises(UserError, match=r"device\.compute_dtype"):
        resolve_compute_dtype("float16", torch.device("cpu"))
