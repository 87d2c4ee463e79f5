"""``python -m MMRegistrationLib`` runs the ``mmreg`` command line."""

from __future__ import annotations

import sys

from MMRegistrationLib.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
