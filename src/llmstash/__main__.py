"""``python -m llmstash``: the command line (``demo``, ``serve``, ``stats``, ``inspect``, ``purge``,
``export``, ``import``; see ``llmstash.cli``)."""

from __future__ import annotations

import sys

from llmstash.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
