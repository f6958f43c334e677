"""`python -m project.report DIR ...`: the older name of `python -m project.leaderboard` (kept because the
README and existing scripts use it)."""

from __future__ import annotations

import sys

from project.leaderboard import main

if __name__ == "__main__":
    sys.exit(main())
