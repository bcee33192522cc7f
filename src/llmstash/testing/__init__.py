"""Testing helpers: a local OpenAI-compatible upstream that records the calls it receives."""

from llmstash.testing.upstream import MockUpstream, RecordedCall

__all__ = ["MockUpstream", "RecordedCall"]
