"""Where things are: the project's assets, and user paths relative to the launch directory."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from src.common.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = PROJECT_ROOT / "assets"


def asset_path(relative: str) -> str:
    """Absolute path of a bundled sample image (used by the `${asset:...}` resolver)."""
    return str(ASSETS_DIR / relative)


def launch_dir() -> Path:
    """The directory the command was run from (Hydra does not chdir with version_base set)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except ImportError:  # pragma: no cover
        pass
    return Path(os.getcwd())


def resolve_input_path(path: str | os.PathLike) -> Path:
    """User paths are relative to where the command was run; `~` is expanded."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else launch_dir() / path


def register_resolvers() -> None:
    """`${asset:content/tubingen.jpg}` in the presets: works from any launch directory."""
    OmegaConf.register_new_resolver("asset", asset_path, replace=True)


def path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be opened, in words ("not found", "is a symbolic link loop", ...), or None."""
    import errno

    try:
        os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)})"
        return "not found"
    except PermissionError:
        return "cannot be read (permission denied)"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return f"cannot be read ({error.strerror or error})"
    return None


def check_input_file(path: Path, what: str) -> None:
    """A one-line error naming `what` (e.g. "content image", "video") when `path` is not a file
    to read: missing, a broken link or a link loop, unreadable, a folder, or empty."""
    problem = path_problem(path)
    if problem is not None:
        raise UserError(f"{what} {problem}: {path}")
    if path.is_dir():
        raise UserError(f"{what} path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"{what} is an empty (zero-byte) file: {path}")
