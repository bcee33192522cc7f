"""``python -m llmstash demo``: the command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmstash", description="A cache for LLM API calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo against a local mock upstream (no server, no API key)")
    demo.add_argument(
        "--delay", type=float, default=None, help="seconds the mock upstream takes per call (default: realistic, ~0.4-0.9 s)"
    )
    demo.add_argument("--real", action="store_true", help="use the real OpenAI API (needs OPENAI_API_KEY)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from llmstash.demo import run_demo

        return run_demo(delay=args.delay, real=args.real)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
