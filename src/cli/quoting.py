"""File names on the command line: quote the values of path keys before Hydra parses them.

Hydra's override grammar takes only letters, digits and ``/-+.$%*@?|_`` unquoted, so real
file names (``~/art/monet.jpg``, ``my photo (1).jpg``, ``eq=ual.jpg``, ``Tübingen.jpg``)
are parser errors. Whatever the shell passes as ``key=value`` for a path key is taken here
as the file name itself, ``~`` expanded, and handed to Hydra as a quoted string.

The rules (docs: "File names"):

* A single run: the whole value is the file name, whatever it holds. ``null`` stays null.
  A value wholly inside quotes (``'style.path="a b.jpg"'``) is already Hydra quoting and is
  left alone.
* A sweep (``-m``): ``,`` separates values, and each value is quoted on its own
  (``style.path=a.jpg,~/b c.jpg``). A name that holds a comma is quoted by the user:
  ``'style.path="com,ma.jpg",other.jpg'``; an unquoted one that names an existing file is
  refused with that advice. Sweep functions (``choice(...)``, ``glob(...)``) are left alone.
* ``style.blend=[{path:...,mask:...}]``: each unquoted ``path:`` / ``mask:`` value is quoted
  up to the next ``,`` or ``}`` (a name with one of those must be quoted by the user).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from src.common.errors import UserError

# Keys whose value is a file or folder name, whichever app: content.path, style.path,
# style.mask, style.blend.0.path, init.path, backbone.weights_path, data.dir, hydra.run.dir...
PATH_KEY_NAMES = {"resume", "output"}
PATH_KEY_ENDINGS = ("path", "dir", "mask", "subdir")
BLEND_LIST_KEY = "style.blend"
BLEND_ITEM = re.compile(r"(?P<lead>[{,]\s*)(?P<key>path|mask)\s*:\s*(?P<value>[^,}'\"][^,}]*)")
SWEEP_FUNCTION = re.compile(r"^\s*(choice|range|interval|glob|sort|shuffle|tag|extend_list)\s*\(")
MULTIRUN_FLAGS = ("-m", "--multirun")


def is_path_key(key: str) -> bool:
    """`content.path`, `+style.blend.0.mask`, `resume`, ... (Hydra's +, ++ and ~ prefixes allowed)."""
    name = key.lstrip("+~")
    if name in PATH_KEY_NAMES:
        return True
    last = name.rsplit(".", 1)[-1] if "." in name else name
    return "." in name and (last in PATH_KEY_ENDINGS or last.endswith("_path") or last.endswith("_dir"))


def hydra_quote(text: str, prefer: str = "'") -> str:
    """`text` as one Hydra quoted string that parses back to exactly `text`.

    Inside quotes Hydra only unescapes backslashes that precede a quote (and those at the
    end); OmegaConf would still resolve `${...}`, so a literal `${` is escaped for it.
    """
    other = '"' if prefer == "'" else "'"
    quote = prefer if prefer not in text or other in text else other
    # Backslashes that precede the quote character, or the end, are doubled; the quote escaped.
    body = re.sub(r"(\\*)" + re.escape(quote), lambda m: m.group(1) * 2 + "\\" + quote, text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    body = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", body)
    return f"{quote}{body}{quote}"


def quoted_span(text: str, start: int) -> int | None:
    """If a quoted string starts at `start`, the index just after its closing quote."""
    quote = text[start]
    if quote not in "'\"":
        return None
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == quote:
            return index + 1
        index += 1
    return None


def is_wholly_quoted(value: str) -> bool:
    return bool(value) and quoted_span(value, 0) == len(value)


def file_name(value: str) -> str:
    """What the user typed, as a file name: `~` and `~user` expanded."""
    return os.path.expanduser(value) if value.startswith("~") else value


def quote_single(value: str) -> str:
    if value == "" or value.lower() == "null" or is_wholly_quoted(value) or is_interpolation(value):
        return value
    return hydra_quote(file_name(value))


def is_interpolation(value: str) -> bool:
    """`${asset:style/shipwreck.jpg}`: the presets' own form, kept as Hydra syntax."""
    return value.startswith("${") and value.endswith("}") and value.count("${") == 1


def split_sweep(value: str) -> list[str]:
    """A sweep's values: split at commas, except inside a value that starts with a quote."""
    pieces, start = [], 0
    while start <= len(value):
        end = quoted_span(value, start) if start < len(value) else None
        if end is not None and (end == len(value) or value[end] == ","):
            pieces.append(value[start:end])
            start = end + 1
            continue
        comma = value.find(",", start)
        if comma < 0:
            pieces.append(value[start:])
            break
        pieces.append(value[start:comma])
        start = comma + 1
    return pieces


def quote_sweep(key: str, value: str, launch_dir: str) -> str:
    if SWEEP_FUNCTION.match(value) or is_wholly_quoted(value):
        return value
    pieces = split_sweep(value)
    for start in range(len(pieces)):
        for end in range(start + 2, len(pieces) + 1):
            name = ",".join(pieces[start:end])
            if os.path.exists(os.path.join(launch_dir, file_name(name))):
                example = hydra_quote(name, prefer='"')  # inside the shell's single quotes
                raise UserError(
                    f"{key}={value}: in a sweep (-m) a comma separates values, but {name} is one file; quote a "
                    f"name that holds a comma, e.g. '{key}={example},...'"
                )
    return ",".join(quote_single(piece) for piece in pieces)


def quote_blend_list(value: str) -> str:
    """`[{path:my photo.jpg,weight:0.3}]`: quote each unquoted path/mask value."""

    def quote_item(match: re.Match[str]) -> str:
        name = match.group("value").rstrip()
        if name.lower() == "null" or is_interpolation(name):
            return match.group(0)
        trailing = match.group("value")[len(name) :]
        return f"{match.group('lead')}{match.group('key')}:{hydra_quote(file_name(name))}{trailing}"

    return BLEND_ITEM.sub(quote_item, value)


def quote_override(argument: str, multirun: bool, launch_dir: str = ".") -> str:
    """One command-line argument, with its value quoted when it is a path key's."""
    if argument.startswith("-") or "=" not in argument:
        return argument
    key, _, value = argument.partition("=")
    if key.lstrip("+~") == BLEND_LIST_KEY and value.lstrip().startswith("["):
        return f"{key}={quote_blend_list(value)}"
    if not is_path_key(key):
        return argument
    quoted = quote_sweep(key, value, launch_dir) if multirun else quote_single(value)
    return f"{key}={quoted}"


def quote_path_overrides(argv: Sequence[str], launch_dir: str | None = None) -> list[str]:
    """sys.argv with every path key's value quoted for Hydra (argv[0] is kept)."""
    arguments = list(argv)
    multirun = any(a in MULTIRUN_FLAGS for a in arguments[1:])
    directory = launch_dir or os.getcwd()
    return arguments[:1] + [quote_override(a, multirun, directory) for a in arguments[1:]]
