"""Semantic caching end to end: llmstash.completion against the recording mock upstream, with the
real all-MiniLM-L6-v2 model run in-process (numpy), the embedded index, RediSearch on a real
valkey-server and Qdrant in local mode."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

import llmstash
from llmstash import ConfigurationError
from llmstash.caching import Cache
from llmstash.semantic.evaluate import load_pairs, quality, score
from llmstash.semantic.tier import DEFAULT_THRESHOLD

MODEL = "gpt-4o-mini"
PAIRS = Path(__file__).resolve().parent.parent / "bench" / "data" / "semantic_pairs.jsonl"
PARAPHRASE = ("How do I cancel my subscription?", "What's the way to cancel my subscription?")


def chat(upstream, text, *, system=None, history=(), **kwargs):
    messages = [{"role": "system", "content": system}] if system else []
    messages += [*list(history), {"role": "user", "content": text}]
    return llmstash.completion(model=kwargs.pop("model", MODEL), messages=messages, api_base=upstream.base_url, **kwargs)


def calls(upstream) -> int:
    return upstream.call_count("chat/completions")


def memory_cache(**kwargs) -> Cache:
    return Cache(type="semantic", semantic_cache_dir=":memory:", **kwargs)


# ----- hits and misses -----------------------------------------------------------------------------


def test_a_paraphrase_is_a_semantic_hit(upstream):
    llmstash.cache = memory_cache()
    first = chat(upstream, PARAPHRASE[0])
    second = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 1
    assert second._hidden_params["cache_hit"] is True
    assert second._hidden_params["semantic_similarity"] >= DEFAULT_THRESHOLD
    assert "semantic_similarity" not in first._hidden_params
    assert second.id == first.id and second.choices[0].message.content == first.choices[0].message.content
    stats = llmstash.cache.stats()
    assert stats["semantic_hits"] == 1 and stats["hits"] == 1 and stats["misses"] == 1


def test_an_exact_repeat_is_an_exact_hit_without_similarity(upstream):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0])
    again = chat(upstream, PARAPHRASE[0])
    assert calls(upstream) == 1
    assert again._hidden_params["cache_hit"] and "semantic_similarity" not in again._hidden_params


@pytest.mark.parametrize(
    ("kind", "stored", "asked"),
    [
        ("numbers", "Where is my order 48213?", "Where is my order 48231?"),
        ("numbers", "Book a table for 4 people at 7pm.", "Book a table for 5 people at 7pm."),
        ("negation", "Why does my code compile?", "Why doesn't my code compile?"),
        ("negation", "Include the config file in the build.", "Exclude the config file from the build."),
        ("entity", "What is the capital of France?", "What is the capital of Germany?"),
        ("entity", "Who is the CEO of Microsoft?", "Who is the CEO of Apple?"),
        ("direction", "Flights from New York to London", "Flights from London to New York"),
        ("direction", "Transfer $500 from checking to savings.", "Transfer $500 from savings to checking."),
        ("direction", "Is Python faster than Java?", "Is Java faster than Python?"),
    ],
)
def test_near_miss_traps_go_upstream(upstream, kind, stored, asked):
    llmstash.cache = memory_cache()
    chat(upstream, stored)
    answer = chat(upstream, asked)
    assert calls(upstream) == 2, kind
    assert answer._hidden_params["cache_hit"] is False


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ({}, {"model": "gpt-4o"}),
        ({"system": "You are terse."}, {"system": "You are verbose."}),
        ({}, {"system": "You are terse."}),
        ({"history": [{"role": "user", "content": "I use Android."}, {"role": "assistant", "content": "OK."}]}, {}),
        ({"temperature": 0}, {"temperature": 1}),
        ({"user": "alice"}, {"user": "bob"}),
        ({"cache": {"namespace": "tenant-a"}}, {"cache": {"namespace": "tenant-b"}}),
        ({"cache": {"namespace": "tenant-a"}}, {}),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, {}),
    ],
    ids=["model", "system-prompt", "added-system", "earlier-turns", "temperature", "user", "namespace", "no-namespace", "tools"],
)
def test_only_requests_equal_but_for_the_last_user_message_share_answers(upstream, stored, asked):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0], **stored)
    answer = chat(upstream, PARAPHRASE[1], **asked)
    assert calls(upstream) == 2
    assert answer._hidden_params["cache_hit"] is False


def test_the_same_context_hits_with_system_prompt_and_history(upstream):
    llmstash.cache = memory_cache()
    context = {
        "system": "You are a support bot.",
        "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "user": "alice",
        "temperature": 0.2,
        "cache": {"namespace": "tenant-a"},
    }
    chat(upstream, PARAPHRASE[0], **context)
    hit = chat(upstream, PARAPHRASE[1], **context)
    assert calls(upstream) == 1 and hit._hidden_params["semantic_similarity"] > 0.9


def test_cache_namespaces_isolate_semantic_entries(upstream, tmp_path):
    directory = str(tmp_path / "shared")
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=directory, namespace="prod")
    chat(upstream, PARAPHRASE[0])
    llmstash.cache.close()
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=directory, namespace="staging")
    assert len(llmstash.cache.semantic.index) == 1  # the same index and entries, another namespace
    answer = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 2 and not answer._hidden_params["cache_hit"]
    llmstash.cache.close()
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=directory, namespace="prod")
    assert chat(upstream, "How can I cancel my subscription?")._hidden_params["cache_hit"]


def test_below_the_threshold_is_a_miss_and_the_threshold_is_configurable(upstream):
    llmstash.cache = memory_cache(similarity_threshold=0.999)
    chat(upstream, PARAPHRASE[0])
    chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 2
    llmstash.cache = memory_cache(similarity_threshold=0.5)
    chat(upstream, "How do I reset my password?")
    hit = chat(upstream, "What are the steps to change my password?")
    assert calls(upstream) == 3 and 0.5 <= hit._hidden_params["semantic_similarity"] < 0.85


def test_text_completions_match_on_the_prompt(upstream):
    llmstash.cache = memory_cache()
    first = llmstash.text_completion(model="gpt-3.5-turbo-instruct", prompt=PARAPHRASE[0], api_base=upstream.base_url)
    second = llmstash.text_completion(model="gpt-3.5-turbo-instruct", prompt=PARAPHRASE[1], api_base=upstream.base_url)
    assert upstream.call_count("/completions") == 1
    assert second._hidden_params["semantic_similarity"] > 0.9 and second.id == first.id


def test_requests_of_other_shapes_use_the_exact_tier_only(upstream):
    llmstash.cache = memory_cache()
    trailing_assistant = [{"role": "user", "content": PARAPHRASE[0]}, {"role": "assistant", "content": "Sure"}]
    llmstash.completion(model=MODEL, messages=trailing_assistant, api_base=upstream.base_url)
    other = [{"role": "user", "content": PARAPHRASE[1]}, {"role": "assistant", "content": "Sure"}]
    llmstash.completion(model=MODEL, messages=other, api_base=upstream.base_url)
    assert calls(upstream) == 2
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    llmstash.completion(model=MODEL, messages=image, api_base=upstream.base_url)
    llmstash.completion(model=MODEL, messages=image, api_base=upstream.base_url)
    assert calls(upstream) == 3  # exact hit
    vectors = llmstash.embedding(model="text-embedding-3-small", input=["a", "b"], api_base=upstream.base_url)
    again = llmstash.embedding(model="text-embedding-3-small", input=["a", "b"], api_base=upstream.base_url)
    assert again._hidden_params["cache_hit"] and again.data[0]["embedding"] == vectors.data[0]["embedding"]
    assert len(llmstash.cache.semantic.index) == 0


def test_text_parts_and_a_string_are_the_same_compared_text(upstream):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0])
    parts = [{"role": "user", "content": [{"type": "text", "text": PARAPHRASE[0]}]}]
    hit = llmstash.completion(model=MODEL, messages=parts, api_base=upstream.base_url)
    assert calls(upstream) == 1 and hit._hidden_params["semantic_similarity"] == pytest.approx(1.0, abs=1e-3)


# ----- lifetime: TTL, replacement, s-maxage, flush, persistence ---------------------------------------


def test_ttl_ends_semantic_hits_and_drops_the_vector(upstream, clock):
    llmstash.cache = memory_cache(ttl=60, clock=clock)
    chat(upstream, PARAPHRASE[0])
    clock.advance(30)
    assert chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"]
    clock.advance(31)
    assert not chat(upstream, "What is the way to cancel my subscription?")._hidden_params["cache_hit"]
    assert calls(upstream) == 2


def test_a_per_call_ttl_of_zero_stores_nothing(upstream):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0], cache={"ttl": 0})
    chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 2 and len(llmstash.cache.semantic.index) == 1


def test_restoring_a_prompt_replaces_its_vector(upstream):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0])
    fresh = chat(upstream, PARAPHRASE[0], cache={"no-cache": True})
    chat(upstream, PARAPHRASE[0], cache={"no-cache": True})
    assert len(llmstash.cache.semantic.index) == 1
    hit = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 3
    assert hit._hidden_params["cache_hit"] and hit.id != fresh.id  # the latest answer (third call)


def test_s_maxage_applies_to_semantic_hits(upstream, clock):
    llmstash.cache = memory_cache(clock=clock)
    chat(upstream, PARAPHRASE[0])
    clock.advance(100)
    assert not chat(upstream, PARAPHRASE[1], cache={"s-maxage": 10})._hidden_params["cache_hit"]
    assert chat(upstream, "What is the way to cancel my subscription?", cache={"s-maxage": 1000})._hidden_params["cache_hit"]


def test_flush_and_delete_reach_the_index(upstream):
    llmstash.cache = memory_cache(namespace="ns")
    first = chat(upstream, PARAPHRASE[0])
    llmstash.cache.delete_cache(first._hidden_params["cache_key"])
    assert len(llmstash.cache.semantic.index) == 0
    chat(upstream, PARAPHRASE[0])
    llmstash.cache.flush_cache()
    assert len(llmstash.cache.semantic.index) == 0
    assert not chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"]


def test_the_embedded_cache_survives_a_restart(upstream, tmp_path):
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=str(tmp_path / "sem"))
    first = chat(upstream, PARAPHRASE[0])
    llmstash.cache.close()
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=str(tmp_path / "sem"))
    hit = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 1 and hit.id == first.id
    assert (tmp_path / "sem" / "index" / "meta.json").exists()


def test_the_index_holds_no_prompt_text(upstream, tmp_path):
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=str(tmp_path / "sem"))
    chat(upstream, "My secret codeword is pineapple-vortex")
    llmstash.cache.close()
    for path in (tmp_path / "sem" / "index").iterdir():
        assert b"pineapple" not in path.read_bytes()


# ----- async, streams, single flight -------------------------------------------------------------------


def test_async_calls_hit_semantically(upstream):
    llmstash.cache = memory_cache()

    async def main():
        messages = [{"role": "user", "content": PARAPHRASE[0]}]
        first = await llmstash.acompletion(model=MODEL, messages=messages, api_base=upstream.base_url)
        messages = [{"role": "user", "content": PARAPHRASE[1]}]
        second = await llmstash.acompletion(model=MODEL, messages=messages, api_base=upstream.base_url)
        return first, second

    first, second = asyncio.run(main())
    assert calls(upstream) == 1 and second.id == first.id and second._hidden_params["semantic_similarity"] > 0.9


def test_a_stream_call_with_a_semantic_hit_gets_a_replay(upstream):
    llmstash.cache = memory_cache()
    streamed = chat(upstream, PARAPHRASE[0], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
    replay = chat(upstream, PARAPHRASE[1], stream=True)
    assert replay._hidden_params["cache_hit"] and replay._hidden_params["semantic_similarity"] > 0.9
    assert "".join(chunk.choices[0].delta.content or "" for chunk in replay) == text
    assert calls(upstream) == 1


def test_an_async_stream_with_a_semantic_hit_gets_a_replay(upstream):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0])

    async def main():
        messages = [{"role": "user", "content": PARAPHRASE[1]}]
        stream = await llmstash.acompletion(model=MODEL, messages=messages, api_base=upstream.base_url, stream=True)
        return stream._hidden_params, [chunk async for chunk in stream]

    hidden, chunks = asyncio.run(main())
    assert hidden["semantic_similarity"] > 0.9 and chunks and calls(upstream) == 1


def test_identical_concurrent_misses_make_one_call_then_paraphrases_hit(upstream):
    llmstash.cache = memory_cache()
    upstream.delay = 0.3
    results = []

    def ask():
        results.append(chat(upstream, PARAPHRASE[0]))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls(upstream) == 1 and len({r.id for r in results}) == 1
    assert chat(upstream, PARAPHRASE[1]).id == results[0].id
    assert calls(upstream) == 1


# ----- fail-open -------------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def broken(*args, **kwargs):
    raise Boom("the index is down")


@pytest.mark.parametrize("part", ["index-search", "index-add", "embedder"])
def test_a_broken_index_or_embedder_never_fails_a_call(upstream, part, caplog):
    llmstash.cache = memory_cache()
    chat(upstream, PARAPHRASE[0])
    tier = llmstash.cache.semantic
    if part == "index-search":
        tier.index.search = broken
    elif part == "index-add":
        tier.index.add = broken
    else:
        tier.embedder = type("Broken", (), {"name": tier.embedder.name, "embed": broken})()
    with caplog.at_level(logging.DEBUG, logger="llmstash"):
        for text in (PARAPHRASE[1], "What is the way to cancel my subscription?", "Where is order 5?"):
            answer = chat(upstream, text)
            assert answer.choices[0].message.content
        asyncio.run(
            llmstash.acompletion(model=MODEL, messages=[{"role": "user", "content": "Async one?"}], api_base=upstream.base_url)
        )
    assert llmstash.cache.stats()["errors"] >= 2
    warnings = [r.getMessage().split(" failed")[0] for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(set(warnings)) >= 1  # once per kind of failure, then at DEBUG
    for record in caplog.records:
        assert "cancel" not in record.getMessage() and "subscription" not in record.getMessage()
    assert chat(upstream, PARAPHRASE[0])._hidden_params["cache_hit"]  # exact hits still work


def test_a_damaged_entry_behind_a_vector_is_a_miss_and_is_dropped(upstream):
    llmstash.cache = memory_cache()
    first = chat(upstream, PARAPHRASE[0])
    llmstash.cache.semantic.exact.set(first._hidden_params["cache_key"], b"garbage", None)
    answer = chat(upstream, PARAPHRASE[1])
    assert not answer._hidden_params["cache_hit"] and calls(upstream) == 2
    assert llmstash.cache.stats()["corrupt"] == 1


# ----- the other types ----------------------------------------------------------------------------------


def test_dual_semantic_exact_tier_first_then_semantic(upstream, redis_url):
    llmstash.cache = Cache(type="dual-semantic", url=redis_url, similarity_threshold=0.8)
    assert type(llmstash.cache.semantic.exact).__name__ == "RedisStorage"
    embedded = []
    real = llmstash.cache.semantic.embedder

    class Counting:
        name = real.name

        def embed(self, texts):
            embedded.append(len(texts))
            return real.embed(texts)

    llmstash.cache.semantic.embedder = Counting()
    chat(upstream, PARAPHRASE[0])
    assert embedded == [1]
    assert chat(upstream, PARAPHRASE[0])._hidden_params["cache_hit"]
    assert embedded == [1]  # an exact hit never embeds
    assert chat(upstream, PARAPHRASE[1])._hidden_params["semantic_similarity"] > 0.9
    assert calls(upstream) == 1


def test_dual_semantic_defaults_to_memory(upstream):
    llmstash.cache = Cache(type="dual-semantic")
    chat(upstream, PARAPHRASE[0])
    assert chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"] and calls(upstream) == 1


def test_redis_semantic_shares_hits_across_caches(upstream, redisearch_url):
    options = dict(type="redis-semantic", url=redisearch_url, redis_semantic_cache_index_name="t-share")
    llmstash.cache = Cache(**options)
    first = chat(upstream, PARAPHRASE[0])
    other = Cache(**options)  # another process would do the same
    llmstash.cache = other
    hit = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 1 and hit.id == first.id and hit._hidden_params["semantic_similarity"] > 0.9
    assert not chat(upstream, "Where is my order 48213?")._hidden_params["cache_hit"]
    assert not chat(upstream, "Where is my order 48231?")._hidden_params["cache_hit"]
    other.semantic.index.drop()


def test_redis_semantic_ttl_and_flush(upstream, redisearch_url, clock):
    llmstash.cache = Cache(
        type="redis-semantic", url=redisearch_url, redis_semantic_cache_index_name="t-ttl", ttl=60, clock=clock
    )
    chat(upstream, PARAPHRASE[0])
    clock.advance(61)
    assert not chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"]
    llmstash.cache.flush_cache()
    assert len(llmstash.cache.semantic.index) == 0
    llmstash.cache.semantic.index.drop()


def test_redis_semantic_fails_open_when_redis_is_gone(upstream):
    llmstash.cache = Cache(type="redis-semantic", host="127.0.0.1", port=1)
    assert chat(upstream, PARAPHRASE[0]).choices[0].message.content
    assert chat(upstream, PARAPHRASE[1]).choices[0].message.content
    assert calls(upstream) == 2 and llmstash.cache.stats()["errors"] >= 2


@pytest.mark.parametrize("where", ["memory", "path"])
def test_qdrant_semantic_in_local_mode(upstream, tmp_path, where):
    location = {"qdrant_api_base": ":memory:"} if where == "memory" else {"qdrant_path": str(tmp_path / "qdrant")}
    llmstash.cache = Cache(type="qdrant-semantic", qdrant_quantization_config="scalar", **location)
    first = chat(upstream, PARAPHRASE[0])
    hit = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 1 and hit.id == first.id and hit._hidden_params["semantic_similarity"] > 0.9
    assert not chat(upstream, "Is Python faster than Java?")._hidden_params["cache_hit"]
    assert not chat(upstream, "Is Java faster than Python?")._hidden_params["cache_hit"]


def test_qdrant_answers_live_in_the_points(upstream):
    """Another process sharing the Qdrant server has none of this one's exact entries, yet hits."""
    llmstash.cache = Cache(type="qdrant-semantic", qdrant_api_base=":memory:")
    first = chat(upstream, PARAPHRASE[0])
    llmstash.cache.semantic.exact.clear()  # as if this were another process
    hit = chat(upstream, PARAPHRASE[1])
    assert calls(upstream) == 1 and hit.id == first.id


def test_an_embedding_model_called_through_llmstash(upstream):
    """Any model embedding() can call: here the mock upstream's (its vectors are hashes of the text,
    not semantic, so only the same text matches)."""
    llmstash.cache = memory_cache(
        semantic_cache_embedding_model="text-embedding-ada-002", semantic_embedding_params={"api_base": upstream.base_url}
    )
    chat(upstream, PARAPHRASE[0])
    assert upstream.call_count("/embeddings") == 1
    parts = [{"role": "user", "content": [{"type": "text", "text": PARAPHRASE[0]}]}]
    hit = llmstash.completion(model=MODEL, messages=parts, api_base=upstream.base_url)
    assert hit._hidden_params["semantic_similarity"] == pytest.approx(1.0, abs=1e-3)
    assert not chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"]
    assert calls(upstream) == 2
    embedding_bodies = [c.body for c in upstream.calls if c.path.endswith("/embeddings")]
    assert all(body["model"] == "text-embedding-ada-002" for body in embedding_bodies)


def test_the_seed_examples_construct(redisearch_url):
    Cache(type="redis-semantic", host="localhost", port=6379, password="password", similarity_threshold=0.8,
          redis_semantic_cache_embedding_model="text-embedding-ada-002").close()  # fmt: skip
    Cache(type="qdrant-semantic", qdrant_api_base="http://localhost:6333", similarity_threshold=0.8).close()
    Cache(type="dual-semantic", host="localhost", port=6379, password="password", similarity_threshold=0.8).close()


# ----- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, -0.1, "0.8", True, float("nan")])
def test_a_threshold_outside_0_to_1_is_refused(value):
    with pytest.raises(ConfigurationError, match="similarity_threshold must be a number from 0 to 1"):
        memory_cache(similarity_threshold=value)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"type": "semantic", "qdrant_api_base": ":memory:"}, "qdrant_api_base"),
        ({"type": "redis-semantic", "semantic_cache_dir": "x"}, "semantic_cache_dir"),
        ({"type": "qdrant-semantic"}, "qdrant_api_base"),
        (
            {"type": "qdrant-semantic", "qdrant_api_base": ":memory:", "qdrant_quantization_config": "tiny"},
            "qdrant_quantization_config",
        ),
        ({"type": "semantic", "semantic_cache_embedding_model": "local/no-such-model"}, "local/no-such-model"),
        ({"type": "semantic", "semantic_cache_embedding_model": 42}, "embedding model"),
        ({"type": "dual-semantic", "semantic_backend": "redis"}, "semantic_backend"),
        ({"type": "dual-semantic", "exact_type": "s3"}, "exact_type"),
        ({"type": "redis-semantic", "redis_semantic_cache_index_name": "a b"}, "redis_semantic_cache_index_name"),
        ({"type": "redis-semantic", "redis_semantic_index_algorithm": "IVF"}, "redis_semantic_index_algorithm"),
        ({"type": "semantic", "semantic_cache_dir": ":memory:", "max_semantic_entries": 0}, "max_semantic_entries"),
    ],
)
def test_bad_parameters_get_a_clear_error(kwargs, named):
    with pytest.raises(ConfigurationError) as info:
        Cache(**kwargs)
    assert named in str(info.value)


# ----- the labelled evaluation set ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation():
    from llmstash.semantic.embedders import make_embedder

    pairs = load_pairs(PAIRS)
    return pairs, score(pairs, make_embedder("local/all-MiniLM-L6-v2"))


def test_the_evaluation_set_is_large_and_covers_every_trap(evaluation):
    pairs, _ = evaluation
    kinds = {}
    for pair in pairs:
        kinds[pair["kind"]] = kinds.get(pair["kind"], 0) + 1
        assert pair["a"] != pair["b"] and pair["label"] in ("match", "different")
    assert len(pairs) >= 300
    assert kinds["paraphrase"] >= 150
    assert all(kinds[kind] >= 30 for kind in ("numbers", "negation", "entity", "direction"))


def test_at_the_default_threshold_no_trap_hits_and_precision_holds(evaluation):
    _, scored = evaluation
    result = quality(scored, DEFAULT_THRESHOLD)
    assert result.precision >= 0.99
    assert result.paraphrase_hit_rate >= 0.6
    for kind in ("numbers", "negation", "entity", "direction"):
        assert result.trap_hits[kind] == 0, kind


@pytest.mark.parametrize("name", ["semantic_pairs_heldout.jsonl", "semantic_pairs_fresh.jsonl"])
def test_the_other_labelled_sets_at_the_default_threshold(name):
    from llmstash.semantic.embedders import make_embedder

    result = quality(score(load_pairs(PAIRS.parent / name), make_embedder("local/all-MiniLM-L6-v2")), DEFAULT_THRESHOLD)
    assert result.precision >= 0.99 and result.paraphrase_hit_rate >= 0.6
    assert all(result.trap_hits[kind] == 0 for kind in ("numbers", "negation", "entity", "direction"))


def test_without_the_guard_the_traps_would_hit(evaluation):
    _, scored = evaluation
    unguarded = quality(scored, DEFAULT_THRESHOLD, guarded=False)
    assert unguarded.trap_hits["numbers"] > 10 and unguarded.trap_hits["direction"] > 10
    assert unguarded.precision < 0.8


def test_a_router_caching_group_shares_semantic_entries(upstream):
    router = llmstash.Router(
        model_list=[
            {"model_name": "small", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream.base_url}},
            {"model_name": "large", "litellm_params": {"model": "openai/gpt-4o", "api_base": upstream.base_url}},
            {"model_name": "other", "litellm_params": {"model": "openai/gpt-4.1", "api_base": upstream.base_url}},
        ],
        caching_groups=[("small", "large")],
        cache_responses=True,
        cache_kwargs={"type": "semantic", "semantic_cache_dir": ":memory:"},
    )
    first = router.completion(model="small", messages=[{"role": "user", "content": PARAPHRASE[0]}])
    hit = router.completion(model="large", messages=[{"role": "user", "content": PARAPHRASE[1]}])
    assert hit.id == first.id and hit._hidden_params["semantic_similarity"] > 0.9
    miss = router.completion(model="other", messages=[{"role": "user", "content": PARAPHRASE[1]}])
    assert not miss._hidden_params["cache_hit"] and calls(upstream) == 2
    router.cache.close()


def test_threads_storing_and_finding_at_once(upstream):
    llmstash.cache = memory_cache()
    topics = ["my subscription", "my order", "my account", "the newsletter", "my membership", "the trial"]
    errors = []

    def worker(topic):
        try:
            first = chat(upstream, f"How do I cancel {topic}?")
            again = chat(upstream, f"How can I cancel {topic}?")
            assert again.id == first.id, topic
        except Exception as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(topic,)) for topic in topics]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert calls(upstream) == len(topics)
    stats = llmstash.cache.stats()
    assert stats["errors"] == 0 and stats["semantic_hits"] == len(topics)


def test_a_prompt_longer_than_the_model_sees_is_matched_exactly_only(upstream):
    llmstash.cache = memory_cache()
    shared = "Summarize this report. " + "The quarter went as planned and costs stayed flat. " * 60
    chat(upstream, shared + "Revenue rose.")
    answer = chat(upstream, shared + "Revenue fell sharply and we lost our largest customer.")
    assert not answer._hidden_params["cache_hit"] and calls(upstream) == 2
    assert len(llmstash.cache.semantic.index) == 0
    assert chat(upstream, shared + "Revenue rose.")._hidden_params["cache_hit"]  # exact hits as always


def test_an_unreachable_qdrant_server_fails_open(upstream):
    llmstash.cache = Cache(type="qdrant-semantic", qdrant_api_base="http://127.0.0.1:1")
    assert chat(upstream, PARAPHRASE[0]).choices[0].message.content
    assert chat(upstream, PARAPHRASE[0])._hidden_params["cache_hit"]  # the exact tier still answers
    assert not chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"]
    assert calls(upstream) == 2 and llmstash.cache.stats()["errors"] >= 2


def test_redis_semantic_on_a_redis_without_the_search_module_fails_open(upstream, redis_url, caplog):
    llmstash.cache = Cache(type="redis-semantic", url=redis_url)
    with caplog.at_level(logging.WARNING, logger="llmstash"):
        chat(upstream, PARAPHRASE[0])
        assert chat(upstream, PARAPHRASE[0])._hidden_params["cache_hit"]  # exact hits from Redis as usual
        assert not chat(upstream, PARAPHRASE[1])._hidden_params["cache_hit"]
    assert calls(upstream) == 2 and llmstash.cache.stats()["errors"] >= 2
    assert any("semantic" in record.getMessage() for record in caplog.records)


def test_redis_semantic_async_and_stream(upstream, redisearch_url):
    llmstash.cache = Cache(type="redis-semantic", url=redisearch_url, redis_semantic_cache_index_name="t-async")

    async def main():
        first = await llmstash.acompletion(
            model=MODEL, messages=[{"role": "user", "content": PARAPHRASE[0]}], api_base=upstream.base_url
        )
        stream = await llmstash.acompletion(
            model=MODEL, messages=[{"role": "user", "content": PARAPHRASE[1]}], api_base=upstream.base_url, stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        return first, stream, text

    first, stream, text = asyncio.run(main())
    assert stream._hidden_params["semantic_similarity"] > 0.9 and text == first.choices[0].message.content
    assert calls(upstream) == 1
    llmstash.cache.semantic.index.drop()


def test_the_storage_lists_the_exact_keys(upstream, tmp_path):
    llmstash.cache = Cache(type="semantic", semantic_cache_dir=str(tmp_path / "sem"), namespace="ns")
    first = chat(upstream, PARAPHRASE[0])
    assert list(llmstash.cache.storage.keys("ns:")) == [first._hidden_params["cache_key"]]
