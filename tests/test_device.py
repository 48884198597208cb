"""What a GPU run relies on, checked on the CPU: no GPU is lent to CI or to these sessions.

Lightning moves the module to the GPU for a fit and back to the CPU when it ends; a run must
keep every tensor it uses on one device, stay on the GPU for its final evaluation, and turn
the GPU's own failures into one-line errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf
from test_speed import config

from src.common.devices import has_fast_bfloat16
from src.common.errors import UserError
from src.transfer.build import build_module
from src.transfer.module import StyleTransfer
from src.transfer.resume import resumed_run
from src.transfer.runner import stylize
from src.transfer.trainer import fit, trainer_settings


def tensors(tree: object) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for value in tree.values() for t in tensors(value)]
    if isinstance(tree, list):
        return [t for value in tree for t in tensors(value)]
    return []


def test_every_tensor_moves_with_the_module():
    # Two styles, one masked (content targets, both styles' statistics, layer masks), and the
    # moving average: every tensor the module holds, in any attribute, must follow it.
    module = build_module(config("size=48", "ema=0.5", "style.mask=left", "style.blend=[{path:shipwreck,mask:right}]"))
    module.compute_targets()
    held = {name: tensors(value) for name, value in vars(module).items() if not name.startswith("_")}
    assert sum(map(len, held.values())) > 20
    module.to("meta")  # a device other than the CPU that needs no hardware
    left_behind = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and any(t.device.type != "meta" for t in tensors(value))
    }
    assert not left_behind
    assert module.image.device.type == module.backbone.layers.conv1_1.weight.device.type == "meta"
    assert module.style_targets["relu1_1"] is module.style_target_sets[0]["relu1_1"]["gram"]


@pytest.mark.parametrize("fails", [False, True])
def test_fit_leaves_the_module_on_the_run_device(fails):
    # Lightning's teardown moves the module to the CPU, also after an error; the run's
    # final evaluation (or its last_good.png after a NaN) must happen on the run's device.
    module = torch.nn.Linear(2, 2)

    def fake_fit(module, **kwargs):
        module.cpu()
        if fails:
            raise FloatingPointError("nan")

    trainer = SimpleNamespace(fit=fake_fit, strategy=SimpleNamespace(root_device=torch.device("meta")), callbacks=[])
    if fails:
        with pytest.raises(FloatingPointError):
            fit(trainer, module, steps=1)
    else:
        fit(trainer, module, steps=1)
    assert module.weight.device.type == "meta"


def test_running_out_of_gpu_memory_is_a_one_line_error(tmp_path, monkeypatch):
    def out_of_memory(self, *args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(StyleTransfer, "training_step", out_of_memory)
    with pytest.raises(UserError, match=r"a 48x36 px run ran out of GPU memory; choose a smaller size"):
        stylize(config("size=48", "steps=2"), tmp_path)


def test_trainer_settings_per_device(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = trainer_settings(config("device=auto"), 5, tmp_path)
    assert (cpu["deterministic"], cpu["benchmark"], cpu["max_steps"]) == (True, False, 5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = trainer_settings(config("device=auto"), 5, tmp_path)
    assert (gpu["deterministic"], gpu["benchmark"]) == (False, True)


def test_gpu_bfloat16_must_be_native(monkeypatch):
    # Pre-Ampere GPUs emulate bf16, slower than float32: `auto` must not pick it there.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not has_fast_bfloat16(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert has_fast_bfloat16(torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU here")
def test_a_gpu_without_cuda_is_a_one_line_error(tmp_path):
    result = run_cli("device=gpu", "size=40", "steps=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: device.accelerator=gpu: no CUDA GPU is available here; use device=cpu or device=auto"
    )


def test_a_resume_may_name_another_device(tmp_path):
    # A run stopped on a GPU machine continues on a CPU: `resume=DIR device=cpu`.
    (tmp_path / ".hydra").mkdir()
    saved = config("size=40", "device=gpu")
    OmegaConf.save(saved, tmp_path / ".hydra" / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    kept, folder = resumed_run(str(tmp_path))
    assert (kept.device.accelerator, folder) == ("gpu", tmp_path)
    moved, _ = resumed_run(config(f"resume={tmp_path}", "device=cpu"), ["device=cpu", f"resume={tmp_path}"])
    assert moved.device.accelerator == "cpu" and moved.size == 40
