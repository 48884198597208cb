"""Style transfer from Python (a notebook, a script): the command line's config, checks and
defaults, without a subprocess.

    from src.api import stylize_image

    image, metrics = stylize_image("photos/me.jpg", "starry_night", size=256, steps=100)
    image, metrics = stylize_image(pil_image, "art/monet.jpg", beta=1e5, optimizer="adam",
                                   **{"optimizer.lr": 0.05}, output_dir="runs/monet")

`content` and `style` are image files, PIL images, or preset names (`tubingen`,
`starry_night`, ...). Every other setting is a keyword: a key of the command line
(`size`, `beta`, `tv_weight`, ...) or a config group (`optimizer="adam"`, `init="noise"`);
dotted keys go in a dict (`**{"optimizer.lr": 0.05}`) or use `__` (`optimizer__lr=0.05`).
A bad value raises src.common.errors.UserError with the command line's message.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from src.common.errors import UserError
from src.common.paths import PROJECT_ROOT

CONF_DIR = PROJECT_ROOT / "conf"


def override(key: str, value: Any) -> str:
    """`key=value` in Hydra's override syntax, a text value quoted whatever it holds."""
    from src.cli.quoting import hydra_quote

    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{key}={value!r}"
    if isinstance(value, (list, tuple, dict)):
        from omegaconf import OmegaConf

        return f"{key}={OmegaConf.to_yaml(OmegaConf.create({'v': value})).split(':', 1)[1].strip()}"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return f"{key}={hydra_quote(str(value))}"


def image_override(group: str, value: str | os.PathLike | Image.Image, folder: Path) -> str:
    """A preset name (`starry_night`), a file, or a PIL image (saved into the run folder)."""
    if isinstance(value, Image.Image):
        path = folder / f"input_{group}.png"
        value.save(path)
        return override(f"{group}.path", str(path))
    text = os.fspath(value)
    if (CONF_DIR / group / f"{text}.yaml").is_file():
        return f"{group}={text}"
    return override(f"{group}.path", str(Path(text).expanduser().absolute()))


def compose_config(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from src.cli.app import configure

    configure()
    from src.cli.hydra_errors import config_keys, describe

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(describe(error, overrides, lambda: config_keys("config"), "src.run")) from None


def stylize_image(
    content: str | os.PathLike | Image.Image,
    style: str | os.PathLike | Image.Image,
    output_dir: str | os.PathLike | None = None,
    **settings: Any,
) -> tuple[Image.Image, dict[str, Any]]:
    """Run one style transfer; return the result image and its metrics (metrics.json's content).

    The run's files (final.png, metrics.json, loss.png, ...) go to `output_dir`, or to a
    temporary folder that is removed afterwards. Defaults are those of `python -m src.run`;
    the CSV logger is off unless `logger=` is given.
    """
    from src.transfer.runner import stylize

    settings.setdefault("logger", "none")
    with tempfile.TemporaryDirectory(prefix="nst-") as scratch:
        folder = Path(output_dir).expanduser().absolute() if output_dir is not None else Path(scratch) / "run"
        folder.mkdir(parents=True, exist_ok=True)
        overrides = [image_override("content", content, Path(scratch)), image_override("style", style, Path(scratch))]
        for key, value in settings.items():
            key = key.replace("__", ".")
            is_group = isinstance(value, str) and (CONF_DIR / key).is_dir()  # optimizer="adam"
            overrides.append(f"{key}={value}" if is_group else override(key, value))
        cfg = compose_config(overrides)
        metrics = stylize(cfg, folder)
        with Image.open(folder / "final.png") as result:
            image = result.convert("RGB")
    return image, metrics
