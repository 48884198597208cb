"""Command-line entry: `python -m src.sweep SWEEP_FOLDER...` writes a sweep's report again."""

import sys

from src.sweeps.report import main

if __name__ == "__main__":
    sys.exit(main())
