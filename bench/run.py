"""Run the llmstash benchmarks, print one markdown table, and (on a full run) write BENCHMARKS.md.

    .venv/bin/python bench/run.py                     # everything; rewrites BENCHMARKS.md
    .venv/bin/python bench/run.py --only sync-hit     # just the named workloads (comma-separated)
    .venv/bin/python bench/run.py --no-litellm        # without LiteLLM's columns

Workloads live in bench/workloads.py, registered by name with ``@workload``. Those registered with
``twin=True`` also measure LiteLLM (bench/litellm_runner.py, in LiteLLM's own venv, driven by
bench/twin.py) in the same run, block by block between llmstash's.
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

import object_store_workloads  # noqa: F401  (registers the S3, GCS and Azure Blob workloads)
import proxy_workloads  # noqa: F401  (registers the proxy workloads, after the library's)
import semantic_workloads  # noqa: F401  (registers the semantic caching workloads)
import twin
import workloads  # noqa: F401  (registers the workloads)
from common import WORKLOADS, BenchError, Measurement, TwinResult

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
HEADERS = ("workload", "p50", "p99", "target", "result", "LiteLLM p50", "LiteLLM p99", "ratio")
ALIGNS = ("<", ">", ">", ">", "<", ">", ">", ">")
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
    "burst meets the target (their p50 and p99 columns are the median and the worst burst). `async-hits-per-second` "
    "is a rate, where higher is better: each round gathers 200 calls and is timed whole, and its p50 and p99 columns "
    "are 200 divided by the median and by the p99 round time (so its p99 is the slow tail, the lower figure); a "
    "target for a rate would be a floor. `memory-per-entry` times nothing: a fresh process reads its resident set "
    "size (`/proc/self/statm`, after `gc.collect()`) before and after storing 100,000 distinct cached chat "
    "completions, and the figure is the growth divided by the entries held."
)
LITELLM_METHOD = (
    "The LiteLLM columns measure LiteLLM in the same run, on the same kind of workload: `bench/litellm_runner.py`, run "
    "by the Python of LiteLLM's own venv (`.venv-litellm`, which `make bench` creates; LiteLLM is never installed beside "
    "llmstash), makes the same calls with `litellm.completion`/`acompletion(..., caching=True)` and `litellm.cache = "
    'litellm.Cache()` (or `Cache(type="redis")`, `Cache(type="disk")`), with the same model name and messages, against '
    "an upstream of its own of the same kind (a second MockUpstream; the harness counts its calls) and the same "
    "valkey-server. The two libraries take turns: the runner sets up and warms up while the harness waits, then times "
    "one block of its calls right after each of llmstash's blocks (a chunk of the interleaved rounds for "
    "`miss-overhead`, one burst for `concurrent-misses`, one fresh process for `import`; for `memory-per-entry`, its "
    "whole store of 100,000 entries, in the runner's own fresh process, once llmstash's has exited), so both meet the "
    "same machine state; neither ever runs while the other is timing. Timing is the same (warm-up, per-call "
    "`perf_counter_ns`, GC off, quietest block); LiteLLM's blocks are shorter (its calls take far longer). Every timed "
    'LiteLLM call that should be a hit is checked to have come back with `_hidden_params["cache_hit"]` True (for a '
    "stream, on the stream object) and the first answer's id, and the runner refuses any connection off 127.0.0.1. "
    "ratio = LiteLLM p50 / llmstash p50 (above 1: llmstash is faster or smaller, or for counts, LiteLLM made that many "
    "times the upstream calls), except for the rate `async-hits-per-second` (higher is better), where ratio = llmstash "
    "p50 / LiteLLM p50, so that above 1 there too means llmstash is ahead; — marks a workload without a LiteLLM twin, "
    "n/a a run where LiteLLM could not be run, ERROR a LiteLLM run that failed a check (the notes say which). Both "
    "sides run with logging disabled. The model name is `openai/gpt-4o-mini` for both (only a name: the upstream is the "
    "mock): LiteLLM prices every answer, cache hits included, and a name missing from its cost map costs it much more "
    "per call (the sync-hit note gives that figure); llmstash does no pricing. LiteLLM's version is pinned in the "
    "Makefile (`LITELLM_SPEC`): 1.106.2 is what `pip install litellm` resolves to on the package index this was run "
    "against (newer releases need a certifi the index does not have yet); its cache-hit path imports parts of "
    "`litellm.proxy`, so the venv also gets fastapi, orjson and soundfile, besides redis and diskcache for its Redis "
    "and disk caches."
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


def litellm_cells(name: str, measured: Measurement | None) -> list[str]:
    """LiteLLM p50, p99 and ratio (LiteLLM / llmstash p50; llmstash / LiteLLM for a throughput):
    above 1, llmstash is ahead."""
    if not WORKLOADS[name].twin:
        return ["—", "—", "—"]
    result = measured.litellm if measured is not None else None
    if result is None:  # llmstash's side failed before LiteLLM's produced a result
        return ["—", "—", "—"] if measured is None else ["n/a", "n/a", "n/a"]
    if result.status == "n/a":
        return ["n/a", "n/a", "n/a"]
    if result.status != "ok":
        return ["ERROR", "—", "—"]
    cells = [_amount(value, result.unit, result.digits) for value in (result.p50, result.p99)]
    ratio = "—"
    if measured is not None and result.p50 is not None and result.p50 > 0 and measured.p50 > 0 and result.unit == measured.unit:
        value = measured.p50 / result.p50 if measured.higher_is_better else result.p50 / measured.p50
        ratio = f"{value:,.0f}x" if value >= 100 else f"{value:.1f}x"
    return [*cells, ratio]


def row(name: str, measured: Measurement | None) -> list[str]:
    if measured is None:
        return [name, "—", "—", "—", "ERROR", *litellm_cells(name, measured)]
    bound = "≥" if measured.higher_is_better else "≤"
    target = "—" if measured.target is None else f"{bound} {measured.target:g} {measured.unit}"
    p50, p99 = (_amount(value, measured.unit, measured.digits) for value in (measured.p50, measured.p99))
    return [name, p50, p99, target, measured.verdict, *litellm_cells(name, measured)]


def markdown_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(HEADERS), *rows]) for i in range(len(HEADERS))]
    aligns = list(ALIGNS)

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
    parser.add_argument(
        "--litellm-python",
        type=Path,
        default=twin.DEFAULT_PYTHON,
        metavar="PATH",
        help="the Python of LiteLLM's venv (default: .venv-litellm/bin/python; `make bench` creates it)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="measure llmstash only (LiteLLM's columns read n/a)")
    args = parser.parse_args(argv)
    names = parse_only(parser, args.only)
    logging.disable(logging.CRITICAL)  # the workloads check cache stats instead of reading warnings
    machine_line = f"Machine: {machine()}"
    warning = busy_warning()
    litellm_line = ""
    if any(WORKLOADS[name].twin for name in names):
        print("checking LiteLLM ...", file=sys.stderr, flush=True)
        litellm_line = twin.configure(None if args.no_litellm else args.litellm_python.absolute())
        print(f"  {litellm_line}", file=sys.stderr, flush=True)
        if not twin.available():
            print("  Note: LiteLLM is not measured in this run; its columns read n/a.", file=sys.stderr, flush=True)

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
    notes = []
    for name, m in results.items():
        if m is not None and m.notes:
            notes.append(f"- {name}: {m.notes}")
        if m is not None and m.litellm is not None and m.litellm.notes and m.litellm.status != "n/a":
            notes.append(f"- {name}, LiteLLM: {m.litellm.notes}")
    header_lines = (machine_line, litellm_line, date_line, warning)
    header = "\n".join(line for line in header_lines if line)
    print(f"\n{header}\n\n{table}\n")
    print("\n".join(notes) + "\n")

    if args.only is None:
        descriptions = [f"- `{w.name}`: {w.description}" for w in WORKLOADS.values()]
        REPORT.write_text(
            "\n\n".join(
                [
                    "# Benchmarks",
                    "  \n".join(line for line in header_lines if line),
                    table,
                    "\n".join(notes),
                    "## Workloads\n\n" + "\n".join(descriptions),
                    METHOD,
                    LITELLM_METHOD,
                    RERUN,
                ]
            )
            + "\n"
        )
        print(f"Wrote {REPORT}")
    else:
        print(f"{REPORT.name} not written: --only runs part of the suite. Run `make bench` (no ONLY) to update it.")
    failed_twins = [name for name, m in results.items() if m is not None and _twin_failed(m.litellm)]
    if failed_twins:
        print(f"LiteLLM's side FAILED for: {', '.join(failed_twins)} (see the notes)", file=sys.stderr)
    return 1 if any(m is None for m in results.values()) or failed_twins else 0


def _twin_failed(result: TwinResult | None) -> bool:
    return result is not None and result.status == "error"


if __name__ == "__main__":
    sys.exit(main())
