"""What both sides of a benchmark send and store, built the same way on each side.

Standard library only: bench/litellm_runner.py (in LiteLLM's venv) imports this beside the harness
(bench/workloads.py) and bench/memory_child.py (in llmstash's), so that llmstash and LiteLLM get the
very same prompts and answers. The harness also compares digests of what each side reports using.
"""

from __future__ import annotations

import hashlib
import os

DEAD_BASE = "http://127.0.0.1:9/v1"
"""Where memory-per-entry's checks send their calls: nothing listens there, so a call that missed the
cache fails instead of being answered (the checks only ever expect hits)."""


def big_prompt(size: int) -> str:
    """``size`` characters of plain English-like ASCII text: the hit-100kb-prompt user message."""
    sentence = "Paragraph {:05d}: a cache keeps recent answers close at hand, so asking twice costs nothing. "
    parts: list[str] = []
    total = 0
    while total < size:
        parts.append(sentence.format(len(parts)))
        total += len(parts[-1])
    return "".join(parts)[:size]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ENTRY_FILLER = "A cache keeps recent answers close at hand, so that asking the same question twice costs nothing. "


def entry_prompt(i: int) -> str:
    """The user message of memory-per-entry's entry ``i``."""
    return f"Memory bench prompt {i:06d}: what is a cache?"


def entry_text(i: int, size: int) -> str:
    """The ``size``-character answer stored for entry ``i`` (distinct for every entry)."""
    return (f"Answer {i:06d}: " + ENTRY_FILLER * (size // len(ENTRY_FILLER) + 1))[:size]


def entries_digest(n: int, size: int) -> str:
    """A digest of the prompts and answers of a memory-per-entry run of ``n`` entries."""
    sample = [entry_prompt(i) + "\n" + entry_text(i, size) for i in (0, n // 2, n - 1)]
    return text_sha256(f"{n}:{size}:" + "\n".join(sample))


def rss_bytes() -> tuple[int, str]:
    """This process's resident set size in bytes, and where it was read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), "/proc/self/statm"
    except OSError:
        import resource  # no /proc: the peak RSS, which is the current one in a process that only grows

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "getrusage ru_maxrss"
