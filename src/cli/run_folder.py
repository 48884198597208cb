"""A run's folder: one run at a time in it, and nothing left behind by a start that failed.

`claim` makes the folder (before Hydra writes .hydra/ into it) and holds an exclusive lock
on it until the process ends, so that a second run started into the same folder is refused
with one line instead of mixing its rows and images into the first one's. `discard` removes
what a failed start made: the folders this process created, when they hold nothing but
Hydra's own records (.hydra/ and the empty log).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from src.common.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the rest works
    fcntl = None  # type: ignore[assignment]

HYDRA_RECORDS = {".hydra", "run.log", "visualize.log", "multirun.yaml"}

_held: dict[Path, int] = {}  # folder -> descriptor holding its lock, for the life of the process
_created: dict[Path, Path] = {}  # folder -> the highest folder this process created for it


def claim(path: str | os.PathLike, key: str) -> Path:
    """Create `path` if needed and lock it for this process; a folder in use is a UserError."""
    folder = Path(path).absolute()
    top = folder
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    existed = folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{key}={path}: cannot create the output folder ({error.strerror or error})") from None
    if not existed:
        _created[folder] = top  # the highest folder this made
    lock(folder, key)
    return folder


def lock(folder: Path, key: str) -> None:
    if fcntl is None or folder in _held:
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise UserError(
            f"{key}={folder}: another run is using this folder; wait for it to end, or choose another folder"
        ) from None
    _held[folder] = descriptor


def release(path: str | os.PathLike) -> None:
    descriptor = _held.pop(Path(path).absolute(), None)
    if descriptor is not None:
        os.close(descriptor)


def holds_only_records(folder: Path) -> bool:
    """Only Hydra's records (of this process's own start: the folder is one it created)."""
    return all(entry.name in HYDRA_RECORDS for entry in folder.iterdir())


def discard(path: str | os.PathLike) -> bool:
    """After a failed start: remove the folder (and the parents made for it) if this process
    created it and it holds only Hydra's records. Returns whether it was removed."""
    folder = Path(path).absolute()
    top = _created.get(folder)
    if top is None or not folder.is_dir() or not holds_only_records(folder):
        return False
    release(folder)
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder
    while parent != top and parent.parent.is_dir() and not any(parent.parent.iterdir()):
        parent = parent.parent
        parent.rmdir()
    _created.pop(folder, None)
    return True
