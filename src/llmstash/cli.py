"""The ``llmstash`` command: ``demo``, ``serve``, and cache operations against a proxy config.

    llmstash serve   --config config.yaml [--host 127.0.0.1] [--port 4000] [--workers 1]
    llmstash stats   --config config.yaml [--namespace N] [--proxy URL]
    llmstash inspect --config config.yaml KEY
    llmstash purge   --config config.yaml [--namespace N] [--yes]
    llmstash export  --config config.yaml FILE [--namespace N]
    llmstash import  --config config.yaml FILE

The cache is the one the config's ``litellm_settings.cache_params`` describe. Export files are
JSON lines: a header line, then ``{"key": ..., "entry": <base64 of the entry's bytes>}`` per
entry; import checks every entry with the envelope decoder (JSON only, never pickle) and skips
what is damaged or expired. Long operations draw a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

import orjson

from llmstash._core.envelope import Entry, decode
from llmstash._core.keys import with_namespace
from llmstash.caching.cache import Cache
from llmstash.exceptions import CorruptEntryError, LlmstashError

EXPORT_FORMAT = "llmstash-export"
EXPORT_VERSION = 1
BATCH = 500
T = TypeVar("T")


class CommandError(Exception):
    """A failure explained to the user (exit status 1, message on stderr)."""


# ----- terminal output ----------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (drawn only when stderr is a terminal)."""

    def __init__(self, label: str, total: int | None = None, stream: IO[str] | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._drawn = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.live and now - self._drawn > 0.05:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            share = min(1.0, self.done / self.total)
            filled = int(share * 30)
            bar = "█" * filled + "░" * (30 - filled)
            self.stream.write(f"\r{self.label} {bar} {share:6.1%} {self.done:,}/{self.total:,}")
        else:
            self.stream.write(f"\r{self.label} {self.done:,}")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def track(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self.advance()
        self.finish()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows in aligned columns (numbers to the right)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) if cells else len(headers[i]) for i in range(len(headers))]
    numeric = [all(_numeric(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(headers), line(["─" * w for w in widths]), *(line(row) for row in cells)])


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, str) and value.replace(",", "").replace(".", "").isdigit())


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return str(count)  # pragma: no cover


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----- the cache of a config ------------------------------------------------------------------------


def open_cache(config_path: str) -> Cache:
    """The cache a proxy config describes."""
    from llmstash.proxy.config import load_config

    config = load_config(config_path)
    if config.cache_params is None:
        raise CommandError(f"{config_path}: caching is off (set litellm_settings.cache: true and cache_params)")
    return Cache(**config.cache_params)


def _prefix(cache: Cache, namespace: str | None) -> str:
    return with_namespace("", cache.namespace, namespace)


def _keys(cache: Cache, prefix: str, label: str) -> list[str]:
    try:
        keys = cache.storage.keys(prefix)
    except NotImplementedError as exc:
        raise CommandError(str(exc)) from None
    return list(Progress(label).track(keys))


def _namespace_of(key: str, base: str) -> str:
    inner = key[len(base) :]
    return inner.rpartition(":")[0] or "(none)"


def stats(cache: Cache, namespace: str | None, out: IO[str]) -> None:
    prefix = _prefix(cache, namespace)
    keys = _keys(cache, prefix, "listing keys")
    base = _prefix(cache, None)
    kinds: dict[str, list[int]] = {}
    namespaces: dict[str, list[int]] = {}
    total_bytes = expired = damaged = 0
    oldest: float | None = None
    newest: float | None = None
    now = time.time()
    progress = Progress("reading entries", len(keys))
    for batch in _chunks(keys, BATCH):
        for key, raw in zip(batch, cache.storage.get_many(batch), strict=True):
            progress.advance()
            if raw is None:
                continue
            total_bytes += len(raw)
            try:
                entry = decode(raw)
            except CorruptEntryError:
                damaged += 1
                continue
            if entry.expired(now):
                expired += 1
            for bucket, name in ((kinds, entry.kind), (namespaces, _namespace_of(key, base))):
                row = bucket.setdefault(name, [0, 0])
                row[0] += 1
                row[1] += len(raw)
            oldest = entry.created_at if oldest is None else min(oldest, entry.created_at)
            newest = entry.created_at if newest is None else max(newest, entry.created_at)
    progress.finish()
    summary = [
        ("backend", cache.type),
        ("namespace", cache.namespace or "(none)")
        if namespace is None
        else ("namespace", f"{cache.namespace or ''}:{namespace}".lstrip(":")),
        ("entries", f"{sum(row[0] for row in kinds.values()):,}"),
        ("size", _size(total_bytes)),
        ("expired, not yet removed", f"{expired:,}"),
        ("damaged", f"{damaged:,}"),
        ("oldest entry", _when(oldest)),
        ("newest entry", _when(newest)),
    ]
    out.write(table(("cache", ""), summary) + "\n\n")
    out.write(table(("kind", "entries", "size"), [(k, f"{v[0]:,}", _size(v[1])) for k, v in sorted(kinds.items())]) + "\n\n")
    ranked = sorted(namespaces.items(), key=lambda item: -item[1][0])[:20]
    out.write(table(("namespace", "entries", "size"), [(k, f"{v[0]:,}", _size(v[1])) for k, v in ranked]) + "\n")


def live_stats(config_path: str, url: str, out: IO[str]) -> None:
    """A running proxy's counters (``GET /cache/stats`` with the config's master key)."""
    import httpx

    from llmstash.proxy.config import load_config

    master_key = load_config(config_path).master_key
    headers = {"Authorization": f"Bearer {master_key}"} if master_key else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/cache/stats", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach the proxy at {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise CommandError(f"the proxy at {url} answered {response.status_code} to /cache/stats")
    data = response.json()
    proxy, cache = data["proxy"], data["cache"]
    rows = [
        ("requests", f"{proxy['requests']:,}"),
        ("hits", f"{proxy['hits']:,}"),
        ("misses", f"{proxy['misses']:,}"),
        ("hit rate", f"{proxy['hit_rate']:.1%}"),
        ("tokens saved", f"{proxy['tokens_saved']:,}"),
        ("dollars saved", f"${proxy['dollars_saved']:,.4f}"),
        ("upstream time saved", f"{proxy['seconds_saved']:,.1f} s"),
        ("upstream errors", f"{proxy['errors']:,}"),
        ("cache errors", f"{cache['errors']:,}"),
        ("entries", "—" if data["entries"] is None else f"{data['entries']:,}"),
    ]
    out.write(table((f"proxy {url} (one worker)", ""), rows) + "\n")


def inspect_entry(cache: Cache, key: str, out: IO[str]) -> None:
    raw = cache.storage.get(key)
    if raw is None:
        raise CommandError(f"no entry under key {key!r}")
    try:
        entry = decode(raw)
    except CorruptEntryError as exc:
        raise CommandError(f"the entry under {key!r} is damaged: {exc}") from None
    now = time.time()
    rows = [
        ("key", key),
        ("kind", entry.kind),
        ("size", _size(len(raw))),
        ("created", f"{_when(entry.created_at)} ({now - entry.created_at:,.0f} s ago)"),
        ("expires", _when(entry.expires_at) + (" (expired)" if entry.expired(now) else "")),
    ]
    usage = entry.data.get("usage") if isinstance(entry.data, dict) else None
    if isinstance(usage, dict):
        rows.append(("tokens", ", ".join(f"{name} {value}" for name, value in usage.items() if isinstance(value, int))))
    out.write(table(("entry", ""), rows) + "\n\n")
    out.write(orjson.dumps(entry.data, option=orjson.OPT_INDENT_2).decode() + "\n")


def purge(cache: Cache, namespace: str | None, yes: bool, out: IO[str]) -> int:
    prefix = _prefix(cache, namespace)
    where = (
        f"namespace {namespace!r}" if namespace else (f"namespace {cache.namespace!r}" if cache.namespace else "the whole cache")
    )
    keys = _keys(cache, prefix, "listing keys")
    if not keys:
        out.write(f"nothing to delete in {where}\n")
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError(f"purge would delete {len(keys):,} entries in {where}: pass --yes to confirm")
        answer = input(f"delete {len(keys):,} entries in {where}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.write("nothing deleted\n")
            return 0
    for key in Progress("deleting", len(keys)).track(keys):
        cache.storage.delete(key)
    out.write(f"deleted {len(keys):,} entries in {where}\n")
    return len(keys)


def export(cache: Cache, path: str, namespace: str | None, out: IO[str]) -> int:
    keys = _keys(cache, _prefix(cache, namespace), "listing keys")
    written = 0
    progress = Progress("exporting", len(keys))
    with open(path, "wb") as file:
        file.write(orjson.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "backend": cache.type}) + b"\n")
        for batch in _chunks(keys, BATCH):
            for key, raw in zip(batch, cache.storage.get_many(batch), strict=True):
                progress.advance()
                if raw is not None:
                    file.write(orjson.dumps({"key": key, "entry": base64.b64encode(raw).decode()}) + b"\n")
                    written += 1
    progress.finish()
    out.write(f"exported {written:,} entries to {path}\n")
    return written


def _imported_entry(number: int, line: bytes) -> tuple[str, bytes, Entry]:
    try:
        record = orjson.loads(line)
        key, blob = record["key"], record["entry"]
        if not isinstance(key, str) or not key or not isinstance(blob, str):
            raise ValueError
        raw = base64.b64decode(blob, validate=True)
        return key, raw, decode(raw)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error, CorruptEntryError):
        raise CorruptEntryError(f"line {number}") from None


def import_file(cache: Cache, path: str, out: IO[str]) -> tuple[int, int]:
    try:
        with open(path, "rb") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        header = orjson.loads(lines[0]) if lines else None
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise CommandError(f"{path} is not an llmstash export (its first line is not the export header)")
    if header.get("version") != EXPORT_VERSION:
        raise CommandError(f"{path} is export version {header.get('version')!r}; this llmstash reads version {EXPORT_VERSION}")
    imported = skipped = 0
    now = time.time()
    for number, line in enumerate(Progress("importing", len(lines) - 1).track(lines[1:]), start=2):
        if not line.strip():
            continue
        try:
            key, raw, entry = _imported_entry(number, line)
        except CorruptEntryError:
            skipped += 1
            continue
        if entry.expired(now):
            skipped += 1
            continue
        cache.storage.set(key, raw, None if entry.expires_at is None else entry.expires_at - now)
        imported += 1
    out.write(
        f"imported {imported:,} entries from {path}" + (f"; skipped {skipped:,} damaged or expired" if skipped else "") + "\n"
    )
    return imported, skipped


# ----- the command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmstash", description="A cache for LLM API calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo against a local mock upstream (no server, no API key)")
    demo.add_argument(
        "--delay", type=float, default=None, help="seconds the mock upstream takes per call (default: realistic, ~0.4-0.9 s)"
    )
    demo.add_argument("--real", action="store_true", help="use the real OpenAI API (needs OPENAI_API_KEY)")

    serve = commands.add_parser("serve", help="run the caching proxy (an OpenAI-compatible server)")
    serve.add_argument("--config", required=True, help="the proxy's YAML config (LiteLLM proxy's shape)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=4000, help="port (default 4000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1; share entries with redis or disk)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", required=True, help="the proxy's YAML config: its cache is the one used")
        return command

    stats_command = with_config("stats", "entries, sizes and kinds in the cache (or a running proxy's counters)")
    stats_command.add_argument("--namespace", help="only this namespace")
    stats_command.add_argument(
        "--proxy", metavar="URL", help="show the counters of the proxy at URL instead (needs its master key)"
    )
    with_config("inspect", "show one entry").add_argument("key", help="the cache key (as in the x-llmstash-cache-key header)")
    purge_command = with_config("purge", "delete entries (all, or one namespace)")
    purge_command.add_argument("--namespace", help="only this namespace (inside the cache's own)")
    purge_command.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    export_command = with_config("export", "write entries to a file (JSON lines, base64 entries)")
    export_command.add_argument("file")
    export_command.add_argument("--namespace", help="only this namespace")
    with_config("import", "load entries from an export file").add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from llmstash.demo import run_demo

        return run_demo(delay=args.delay, real=args.real)
    try:
        if args.command == "serve":
            from llmstash.proxy.server import serve

            serve(args.config, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)
            return 0
        if args.command == "stats" and args.proxy:
            live_stats(args.config, args.proxy, sys.stdout)
            return 0
        cache = open_cache(args.config)
        try:
            out = sys.stdout
            if args.command == "stats":
                stats(cache, args.namespace, out)
            elif args.command == "inspect":
                inspect_entry(cache, args.key, out)
            elif args.command == "purge":
                purge(cache, args.namespace, args.yes, out)
            elif args.command == "export":
                export(cache, args.file, args.namespace, out)
            elif args.command == "import":
                import_file(cache, args.file, out)
        finally:
            cache.close()
    except (CommandError, LlmstashError, ImportError) as exc:
        sys.stderr.write(f"llmstash {args.command}: {exc}\n")
        return 1
    return 0
