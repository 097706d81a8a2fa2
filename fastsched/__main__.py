"""``python -m fastsched``: the same as the ``fastsched-pool`` command."""
from __future__ import annotations

import sys

from fastsched.cli import main

if __name__ == "__main__":
    sys.exit(main())
