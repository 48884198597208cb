"""`--help`: every key with its default and meaning, and each config group's choices.

Made from the configs themselves: the defaults are the composed config (so
`python -m src.run optimizer=adam --help` shows Adam's keys), the meanings are the comments
in conf/*.yaml (a comment after a key, the comment lines under it, or those just above it),
and, where a file has none, the comment after the field in the typed schema (src/schema.py).
A group's choices are its files; each choice's first comment line says what it is.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
import typing
from enum import Enum
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.common.paths import PROJECT_ROOT

CONF_DIR = PROJECT_ROOT / "conf"
WIDTH = 80
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*|\"[^\"]+\"|'[^']+'):(?P<rest>.*)$")
SCHEMA_FIELD = re.compile(r"^\s+(?P<name>\w+):.*?#\s*(?P<comment>.+)$")
SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]][a-z0-9)\]])(?<!\bal)[.!?]\s+(?=[A-Z])")
SKIPPED_TOP_KEYS = ("defaults", "hydra")

USAGE = {
    "config": (
        "python -m src.run [GROUP=CHOICE] [KEY=VALUE ...]  one style transfer\n"
        "python -m src.run -m KEY=A,B,C ...                 a sweep: a run per value"
    ),
    "video": (
        "python -m src.video video.path=CLIP [KEY=VALUE ...]  a stylised video\n"
        "python -m src.video -m video.temporal_weight=A,B ...  a sweep"
    ),
    "visualize": (
        "python -m src.visualize [KEY=VALUE ...]  top-k image patches of units\n"
        "python -m src.visualize -m KEY=A,B ...   a sweep"
    ),
}

FILE_NAMES_NOTE = """\
File names: path keys (content.path, style.path, style.mask, init.path,
data.dir, backbone.weights_path, resume, output, ...) take any file name as the
shell passes it, with spaces, '=', ',', '(1)', quotes or '~', as in
"content.path=my photo (1).jpg".
In a sweep (-m) a ',' separates values: quote a name that holds a comma for
Hydra, as in 'style.path="a,b.jpg",c.jpg'."""


def strip_comment(rest: str) -> tuple[str, str]:
    """(value, comment) of the text after `key:` (a '#' inside quotes is not a comment)."""
    quote = None
    for index, char in enumerate(rest):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (index == 0 or rest[index - 1] in " \t"):
            return rest[:index].strip(), rest[index + 1 :].strip()
    return rest.strip(), ""


def yaml_comments(path: Path, prefix: str = "") -> dict[str, str]:
    """{dotted key: meaning} from the comments of one YAML config file."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []  # comment lines just above the next key
    last_key, last_comment_column = "", -1
    seen_key = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped:
            pending, last_comment_column = [], -1
            continue
        if stripped.startswith("#"):
            column = len(raw) - len(raw.lstrip())
            text = stripped.lstrip("#").strip()
            if last_key and column == last_comment_column:  # a comment continued under its key
                comments[last_key] += " " + text
            elif seen_key:
                pending.append(text)
            continue
        match = KEY_LINE.match(raw)
        if not match or stripped.startswith("- "):
            pending = []
            continue
        indent, key = len(match.group("indent")), match.group("key").strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        value, comment = strip_comment(match.group("rest"))
        seen_key = True
        if not value:
            stack.append((indent, key))
        meaning = comment or " ".join(pending)
        pending = []
        if dotted.split(".")[0] in SKIPPED_TOP_KEYS:
            last_key, last_comment_column = "", -1
            continue
        full = prefix + dotted
        if meaning:
            comments[full] = meaning
            last_key = full
            last_comment_column = raw.index("#") if comment else -1
        else:
            last_key, last_comment_column = "", -1
    return comments


def header_comment(path: Path) -> str:
    """The first sentence of a file's opening comment: what a group's choice is."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped.startswith("#"):
            break
        lines.append(stripped.lstrip("#").strip())
    paragraph = " ".join(lines)
    end = SENTENCE_END.search(paragraph)
    return paragraph[: end.start() + 1] if end else paragraph


def schema_comments(node: type, prefix: str = "") -> dict[str, str]:
    """{dotted key: comment} from the field comments of a schema dataclass and its children."""
    comments: dict[str, str] = {}
    try:
        source = inspect.getsource(node)
    except (OSError, TypeError):
        return comments
    for line in source.splitlines():
        match = SCHEMA_FIELD.match(line)
        if match:
            comments[prefix + match.group("name")] = match.group("comment").strip()
    hints = typing.get_type_hints(node)
    for field in dataclasses.fields(node):
        child = hints.get(field.name)
        arguments = typing.get_args(child)
        if arguments and typing.get_origin(child) in (list, typing.List):  # noqa: UP006
            child = arguments[0]
        if dataclasses.is_dataclass(child):
            comments.update(schema_comments(child, f"{prefix}{field.name}."))  # type: ignore[arg-type]
    return comments


def group_choices(config_name: str) -> dict[str, str]:
    """{group: default choice} from the config's defaults list."""
    defaults = cast(DictConfig, OmegaConf.load(CONF_DIR / f"{config_name}.yaml")).get("defaults") or []
    chosen = {}
    for entry in defaults:
        if isinstance(entry, DictConfig):
            for group, choice in entry.items():
                if not str(group).startswith("hydra") and (CONF_DIR / str(group)).is_dir():
                    chosen[str(group)] = str(choice)
    return chosen


def meanings(config_name: str, choices: dict[str, str]) -> dict[str, str]:
    """Every key's meaning: the schema's comments, overridden by the config files' own."""
    found: dict[str, str] = {}
    from src.transfer.schema import StyleTransferConfig

    shared = schema_comments(StyleTransferConfig)  # the backbone and device groups serve both apps
    found.update(
        shared
        if config_name == "config"
        else {key: text for key, text in shared.items() if key.split(".")[0] in choices}
    )
    for group, choice in choices.items():
        path = CONF_DIR / group / f"{choice}.yaml"
        if path.is_file():
            found.update(yaml_comments(path, prefix=f"{group}."))
    found.update(yaml_comments(CONF_DIR / f"{config_name}.yaml"))
    return found


def shown_value(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value).replace(" ", "")
    if isinstance(value, str) and value.startswith(str(PROJECT_ROOT)):
        text = str(Path(value).relative_to(PROJECT_ROOT))
    return text


def with_choices(meaning: str, value: Any) -> str:
    """A choice key's meaning followed by its choices (the schema's enum), unless it names them."""
    if not isinstance(value, Enum):
        return meaning
    names = [str(choice.value) for choice in type(value)]
    if all(name in meaning for name in names):
        return meaning
    choices = f"one of: {' | '.join(names)}"
    return f"{meaning} ({choices})" if meaning else choices


def leaf_keys(cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every setting; a layer-weight map or a list is one setting."""
    keys: list[tuple[str, Any]] = []
    for key in cfg:
        value = cfg._get_node(key)._value() if OmegaConf.is_missing(cfg, key) else cfg[key]
        dotted = f"{prefix}{key}"
        if str(key).startswith("_") and str(key).endswith("_"):
            continue
        if isinstance(value, DictConfig) and value and prefix + str(key) not in ("layers.content", "layers.style"):
            keys.extend(leaf_keys(value, f"{dotted}."))
        else:
            keys.append((dotted, value))
    return keys


def wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * indent) or []


def help_text(config_name: str, overrides: list[str] | None = None) -> str:
    """The whole help page for conf/<config_name>.yaml, with `overrides` applied."""
    from hydra import compose, initialize_config_dir

    from src.cli.app import configure

    configure()  # the typed schema and the ${asset:} resolver

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides or []), return_hydra_config=True)
    choices = {
        group: str(cfg.hydra.runtime.choices.get(group, default))
        for group, default in group_choices(config_name).items()
    }
    cfg = OmegaConf.masked_copy(cfg, cast(list[str], [k for k in cfg if k != "hydra"]))
    found = meanings(config_name, choices)
    lines = ["Usage:", *("  " + line for line in USAGE[config_name].splitlines()), ""]
    if choices:
        lines += ["Config groups (GROUP=CHOICE; * = the choice now):"]
        for group, choice in choices.items():
            lines.append(f"  {group}:")
            for path in sorted((CONF_DIR / group).glob("*.yaml")):
                mark = "*" if path.stem == choice else " "
                lines += textwrap.wrap(
                    f"{mark} {path.stem:<17} {header_comment(path)}",
                    WIDTH,
                    initial_indent="    ",
                    subsequent_indent=" " * 24,
                )
        lines.append("")
    lines += ["Keys (KEY=VALUE; the value shown is the default with the choices above):"]
    for key, value in leaf_keys(cfg):
        if key == "optimizer" or key == "logger":
            continue
        lines += wrap(f"{key}={shown_value(value)}", 2)
        lines += wrap(with_choices(found.get(key, ""), value), 6)
    lines += [
        "",
        *FILE_NAMES_NOTE.splitlines(),
        "",
        "Hydra's own options (launchers, output folders, --cfg job): --hydra-help",
    ]
    return "\n".join(lines) + "\n"
