"""``python -m facevae_tf``: the ``facevae`` command line with the tf backend as the default of new runs.

``--backend`` (and the backend of a ``--config`` file) still win; commands on an existing run use
the run's own backend.
"""
import sys

from shared.cli import main

if __name__ == "__main__":
    sys.exit(main(default_backend="tf"))
