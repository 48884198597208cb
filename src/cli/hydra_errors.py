"""Hydra's own config errors as one line that names the key and what is allowed.

Hydra reports an unknown key, a wrong type, a missing choice or a syntax error in several
lines (and exits 1); the project's errors are one line and exit 2. `describe` turns each
kind into the project's form, with a "did you mean" for a mistyped key or choice.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

TYPE_NAMES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "text"}
CONVERT = re.compile(r"Value '(?P<value>.*)' of type '\w+' could not be converted to (?P<type>\w+)")
NOT_A_CHOICE = re.compile(r"Invalid value '(?P<value>.*)', expected one of \[(?P<choices>.*)\]")
CANNOT_ASSIGN = re.compile(r"Cannot assign (?P<given>\w+) to (?P<wanted>.+)")
COULD_NOT_OVERRIDE = re.compile(r"Could not override '(?P<key>[^']+)'")
MERGING = re.compile(r"Error merging override (?P<override>.+)")
MISSING_CHOICE = re.compile(r"Could not find '(?P<group>[^']+)/(?P<choice>[^']+)'")
NO_GROUP = re.compile(r"Could not find '(?P<group>[^'/]+)'")

CONFIG_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException, OmegaConfBaseException)


def is_config_error(error: BaseException) -> bool:
    return isinstance(error, CONFIG_ERRORS)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def find_override(overrides: Sequence[str], key: str) -> str:
    """The command-line argument that set `key` (`key=value`, `+key=value`, ...)."""
    for override in overrides:
        name = override.split("=", 1)[0].lstrip("+~")
        if name == key:
            return override
    return key


def unparsable_override(overrides: Sequence[str]) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except OverrideParseException:
            return override
    return None


def describe(error: BaseException, overrides: Sequence[str], keys: Callable[[], Iterable[str]], app: str) -> str:
    """One line for a Hydra config error; `keys` lists every dotted key (for "did you mean")."""
    help_hint = f"python -m {app} --help lists every key"
    cause = error.__cause__ or error.__context__
    message = str(error)
    if isinstance(error, OverrideParseException):
        bad = unparsable_override(overrides) or "an override"
        return (
            f"{bad}: not valid override syntax ({first_line(error)}); a text value with spaces, commas, "
            f"brackets or '=' needs quotes for Hydra: 'key=\"...\"'"
        )
    if isinstance(error, MissingConfigException) or MISSING_CHOICE.search(message):
        match = MISSING_CHOICE.search(message)
        if match:
            group, choice = match.group("group"), match.group("choice")
            options = re.findall(r"^\t(\S+)$", message, flags=re.MULTILINE)
            listed = f"; choose one of {', '.join(options)}" if options else ""
            return f"{group}={choice}: no such choice{listed}{did_you_mean(choice, options)}"
        match = NO_GROUP.search(message)
        if match:
            group = match.group("group")
            return f"{group}: no such config group{did_you_mean(group, keys())} ({help_hint})"
    match = COULD_NOT_OVERRIDE.search(message)
    if match:
        key = match.group("key")
        return f"{find_override(overrides, key)}: no such key{did_you_mean(key, keys())} ({help_hint})"
    match = MERGING.search(message)
    if match:
        override = match.group("override").strip()
        reason = first_line(cause) if cause is not None else first_line(error)
        converted = CONVERT.search(reason)
        if converted:
            wanted = TYPE_NAMES.get(converted.group("type"), converted.group("type"))
            return f"{override}: must be {wanted}"
        choice = NOT_A_CHOICE.search(reason)
        if choice:
            choices = [c.strip() for c in choice.group("choices").split(",")]
            return f"{override}: must be one of {', '.join(choices)}{did_you_mean(choice.group('value'), choices)}"
        assigned = CANNOT_ASSIGN.search(reason)
        if assigned:
            wanted = assigned.group("wanted")
            if wanted.startswith("Dict"):
                return f"{override}: must be a mapping, e.g. {{relu4_2:1.0}}"
            if wanted.startswith("List"):
                return f"{override}: must be a list, e.g. [a,b]"
            return f"{override}: must be {TYPE_NAMES.get(wanted, wanted)}"
        return f"{override}: {reason}"
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        reason = first_line(error)
        return f"{key}: {reason}" if key else reason
    return first_line(error)


def config_keys(config_name: str) -> list[str]:
    """Every dotted key and group of conf/<config_name>.yaml as composed by default."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig

    from src.cli.app import configure
    from src.cli.help import CONF_DIR, group_choices

    configure()  # the typed schema and the ${asset:} resolver

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name)

    def walk(node: DictConfig, prefix: str) -> list[str]:
        found = []
        for key in node:
            dotted = f"{prefix}{key}"  # type: ignore[str-bytes-safe]  # config keys are str
            found.append(dotted)
            value = node._get_node(key)
            if isinstance(value, DictConfig):
                found += walk(value, f"{dotted}.")
        return found

    return walk(cfg, "") + list(group_choices(config_name))
