"""Run the llmstash benchmarks, print one markdown table, and (on a full run) write BENCHMARKS.md.

    .venv/bin/python bench/run.py                     # everything; rewrites BENCHMARKS.md
    .venv/bin/python bench/run.py --only sync-hit     # just the named workloads (comma-separated)

Workloads live in bench/workloads.py, registered by name with ``@workload``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import workloads  # noqa: F401  (registers the workloads)
from common import WORKLOADS, BenchError, Measurement

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
HEADERS = ("workload", "p50", "p99", "target", "result")
RERUN = (
    "Rerun with `make bench` (every workload; rewrites this file) or `make bench ONLY=sync-hit` "
    "(just the named workloads, comma-separated; prints the table and leaves this file alone)."
)
METHOD = (
    "Each workload warms up first and times every call with `time.perf_counter_ns` (the cyclic GC is off during "
    "timed loops, as in `timeit`); percentiles are nearest-rank. Hit workloads time 5 blocks of calls and report "
    "the quietest (lowest-median) block, since other processes on a shared machine only ever add time; the notes "
    "give the p50 over all blocks too. `import` runs with bytecode cached, as for an installed package. The "
    "upstream is llmstash's MockUpstream on 127.0.0.1 (TCP_NODELAY; no delay except in `concurrent-misses*`, where "
    "it takes 0.2 s so that every caller of a burst arrives while the first call is in flight); no traffic leaves "
    "the machine. Targets bound the p50, except for the `concurrent-misses*` counts, which pass only when every "
    "burst meets the target (their p50 and p99 columns are the median and the worst burst)."
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    core_text = f"{cores} cores" + (f" ({usable} usable)" if usable != cores else "")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{cpu_model()}, {core_text}, {python}, {platform.system()} {platform.release()}"


def busy_warning() -> str | None:
    """A warning when other processes were using the CPU as the run started (1-minute load average)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load < 0.5:
        return None
    return f"Warning: the machine was busy (load average {load:.2f}) when this run started; timings run high under load."


def _amount(value: float | None, unit: str, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f} {unit}"


def row(name: str, measured: Measurement | None) -> list[str]:
    if measured is None:
        return [name, "—", "—", "—", "ERROR"]
    target = "—" if measured.target is None else f"≤ {measured.target:g} {measured.unit}"
    p50, p99 = (_amount(value, measured.unit, measured.digits) for value in (measured.p50, measured.p99))
    return [name, p50, p99, target, measured.verdict]


def markdown_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(HEADERS), *rows]) for i in range(len(HEADERS))]
    aligns = ["<", ">", ">", ">", "<"]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":" if a == ">" else "-" * (w + 2)) for a, w in zip(aligns, widths, strict=True)) + "|"
    return "\n".join([line(list(HEADERS)), rule, *(line(r) for r in rows)])


def parse_only(parser: argparse.ArgumentParser, value: str | None) -> list[str]:
    if value is None:
        return list(WORKLOADS)
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        what = f"unknown workload(s): {', '.join(unknown)}" if unknown else "--only needs at least one workload name"
        parser.error(f"{what}. Valid names: {', '.join(WORKLOADS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark llmstash; see BENCHMARKS.md.")
    parser.add_argument("--only", metavar="NAME[,NAME...]", help=f"run just these workloads: {', '.join(WORKLOADS)}")
    args = parser.parse_args(argv)
    names = parse_only(parser, args.only)
    logging.disable(logging.CRITICAL)  # the workloads check cache stats instead of reading warnings
    machine_line = f"Machine: {machine()}"
    warning = busy_warning()

    results: dict[str, Measurement | None] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            results[name] = WORKLOADS[name].run()
        except Exception as exc:
            results[name] = None
            print(f"  {name} FAILED: {exc}", file=sys.stderr)
            if not isinstance(exc, BenchError):
                traceback.print_exc()
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    date_line = f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    table = markdown_table([row(name, measured) for name, measured in results.items()])
    notes = [f"- {name}: {m.notes}" for name, m in results.items() if m is not None and m.notes]
    header = "\n".join(line for line in (machine_line, date_line, warning) if line)
    print(f"\n{header}\n\n{table}\n")
    print("\n".join(notes) + "\n")

    if args.only is None:
        descriptions = [f"- `{w.name}`: {w.description}" for w in WORKLOADS.values()]
        REPORT.write_text(
            "\n\n".join(
                [
                    "# Benchmarks",
                    "  \n".join(line for line in (machine_line, date_line, warning) if line),
                    table,
                    "\n".join(notes),
                    "## Workloads\n\n" + "\n".join(descriptions),
                    METHOD,
                    RERUN,
                ]
            )
            + "\n"
        )
        print(f"Wrote {REPORT}")
    else:
        print(f"{REPORT.name} not written: --only runs part of the suite. Run `make bench` (no ONLY) to update it.")
    return 1 if any(m is None for m in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
