"""``python -m facevae``: the ``facevae`` command line (imports no framework until a command needs one)."""
import sys

from shared.cli import main

if __name__ == "__main__":
    sys.exit(main())
