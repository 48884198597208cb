"""What the command line goes through before Hydra sees it: --help, and file names quoted."""

from __future__ import annotations

import sys

from src.cli.quoting import quote_path_overrides
from src.errors import UserError

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
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv = arguments
