"""What the command line goes through before Hydra sees it: --help, file names quoted, and
a resumed run pointed at its own folder."""

from __future__ import annotations

import sys

from src.cli.quoting import MULTIRUN_FLAGS, file_name, quote_path_overrides
from src.common.errors import UserError

HELP_FLAGS = ("--help", "-h")


def prepare_argv(config_name: str) -> None:
    """Print the generated help and exit, or quote the path keys' values in sys.argv for Hydra."""
    try:
        arguments = quote_path_overrides(sys.argv)
        if any(argument in HELP_FLAGS for argument in arguments[1:]):
            from src.cli.help import help_text

            overrides = [a for a in arguments[1:] if not a.startswith("-")]
            sys.stdout.write(help_text(config_name, overrides))
            sys.exit(0)
        if config_name == "config":
            arguments = point_resume_at_its_folder(sys.argv, arguments)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv = arguments


def value_of(raw: list[str], key: str) -> str | None:
    for argument in raw[1:]:
        name, sep, value = argument.partition("=")
        if sep and name.lstrip("+") == key:
            return value
    return None


def point_resume_at_its_folder(raw: list[str], arguments: list[str]) -> list[str]:
    """`resume=DIR`: the command runs in DIR (its log appended to DIR/run.log), writing no new
    folder; a folder that cannot be resumed is refused before anything is made."""
    multirun = any(a in MULTIRUN_FLAGS for a in raw[1:])
    if multirun and value_of(raw, "output") not in (None, "", "null"):
        raise UserError(
            "output= names one file, but a sweep makes several results: each job writes final.png in its folder"
        )
    resume = value_of(raw, "resume")
    if multirun or resume in (None, "", "null"):
        return arguments
    from src.transfer.resume import run_folder

    folder = run_folder(file_name(resume))
    kept = [a for a in arguments if a.partition("=")[0].lstrip("+") not in ("hydra.run.dir", "hydra.output_subdir")]
    from src.cli.quoting import hydra_quote

    return [*kept, f"hydra.run.dir={hydra_quote(str(folder))}", "hydra.output_subdir=null"]
