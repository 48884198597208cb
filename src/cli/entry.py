"""The life of a command around Hydra: the argument list prepared, Hydra's errors made one line.

`run_main(main, config_name, app)`: file names quoted and --help answered (src/cli/argv.py),
then Hydra runs `main`; an error in the config (unknown key, wrong type, no such choice,
bad syntax) is one line naming the key and exit code 2, and Ctrl-C before the work starts
is one line and exit code 130. Errors of the work itself are the app's to report.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from src.cli.argv import prepare_argv

INTERRUPTED_EXIT = 130
_held: list[int] = []  # Ctrl-C received while the libraries load


def hold_interrupts() -> None:
    """Remember Ctrl-C while the libraries load instead of raising it inside them: an import that
    catches every exception swallows the KeyboardInterrupt, and the command would then run on
    as if it had not been stopped. `run_main` acts on it once the imports are done."""
    signal.signal(signal.SIGINT, lambda signum, frame: _held.append(signum))


def release_interrupts() -> None:
    """Ctrl-C raises again; one that came while the libraries loaded ends the command now."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _held:
        interrupted_while_starting()


def interrupted_while_starting() -> NoReturn:
    print("error: interrupted while starting; nothing was done", file=sys.stderr, flush=True)
    # Nothing to clean up yet, and a library interrupted halfway through its import can turn a normal
    # exit into a death by SIGINT at shutdown: leave at once with the documented code.
    os._exit(INTERRUPTED_EXIT)


def run_main(main: Callable[[], Any], config_name: str, app: str) -> None:
    release_interrupts()
    try:
        prepare_argv(config_name)
        # Hydra then raises its config errors instead of printing them in several lines.
        os.environ["HYDRA_FULL_ERROR"] = "1"
        main()
    except KeyboardInterrupt:
        interrupted_while_starting()
    except Exception as error:
        from src.cli.hydra_errors import config_keys, describe, is_config_error

        if not is_config_error(error):
            raise
        overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
        try:
            line = describe(error, overrides, lambda: config_keys(config_name), app)
        except Exception:  # describing must never hide the error itself
            line = str(error).strip().splitlines()[0]
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
