"""One suite for every vector index: the embedded numpy index (in memory and on disk), RediSearch
(a real valkey-server with the search module) and Qdrant (qdrant-client local mode)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from conftest import FakeClock
from llmstash.semantic.embedded_index import EmbeddedIndex
from llmstash.semantic.qdrant_index import QdrantIndex
from llmstash.semantic.redis_index import RedisIndex

DIM = 16
_names = itertools.count()


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def near(vector: np.ndarray, cosine: float, seed: int = 99) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from ``vector``."""
    other = unit(seed, len(vector))
    other -= other.dot(vector) * vector
    other /= np.linalg.norm(other)
    result = cosine * vector + np.sqrt(1 - cosine**2) * other
    return (result / np.linalg.norm(result)).astype(np.float32)


@pytest.fixture(params=["embedded-memory", "embedded-disk", "redisearch", "qdrant-local"])
def make_index(request, tmp_path, clock) -> Iterator:
    made = []

    def make():
        kind = request.param
        if kind == "embedded-memory":
            index = EmbeddedIndex(None, clock=clock)
        elif kind == "embedded-disk":
            index = EmbeddedIndex(tmp_path / "index", clock=clock)
        elif kind == "redisearch":
            from llmstash.backends.redis import RedisStorage

            url = request.getfixturevalue("redisearch_url")
            index = RedisIndex(RedisStorage(url=url), name=f"conformance-{next(_names)}", clock=clock)
        else:
            index = QdrantIndex(url=":memory:", collection=f"conformance-{next(_names)}", clock=clock)
        made.append(index)
        return index

    make.kind = request.param
    yield make
    for index in made:
        try:
            if isinstance(index, RedisIndex):
                index.drop()
            index.close()
        except Exception:
            pass


def test_nearest_first_with_exact_cosine(make_index):
    index = make_index()
    base = unit(1)
    index.add("far", near(base, 0.2), "s", {"n": 1}, None)
    index.add("close", near(base, 0.95), "s", {"n": 2}, None)
    index.add("mid", near(base, 0.7), "s", {"n": 3}, None)
    found = index.search(base, 3, "s")
    assert [m.id for m in found] == ["close", "mid", "far"]
    assert found[0].score == pytest.approx(0.95, abs=1e-4)
    assert found[0].payload == {"n": 2}


def test_k_limits_the_results(make_index):
    index = make_index()
    for i in range(6):
        index.add(f"id{i}", unit(i), "s", {}, None)
    assert len(index.search(unit(0), 2, "s")) == 2
    assert index.search(unit(0), 1, "s")[0].id == "id0"


def test_scope_filters_the_search(make_index):
    index = make_index()
    vector = unit(2)
    index.add("a", vector, "tenant-a", {}, None)
    index.add("b", near(vector, 0.99), "tenant-b", {}, None)
    assert [m.id for m in index.search(vector, 5, "tenant-a")] == ["a"]
    assert [m.id for m in index.search(vector, 5, "tenant-b")] == ["b"]
    assert index.search(vector, 5, "tenant-c") == []


def test_readding_an_id_replaces_it(make_index):
    index = make_index()
    first, second = unit(3), unit(4)
    index.add("x", first, "s", {"v": 1}, None)
    index.add("x", second, "s", {"v": 2}, None)
    found = index.search(second, 5, "s")
    assert [m.id for m in found] == ["x"]
    assert found[0].payload == {"v": 2}
    assert found[0].score == pytest.approx(1.0, abs=1e-4)
    index.add("x", first, "other", {"v": 3}, None)  # moved to another scope
    assert index.search(second, 5, "s") == []
    assert [m.id for m in index.search(first, 5, "other")] == ["x"]


def test_delete_and_clear(make_index):
    index = make_index()
    for name in ("ns1:a", "ns1:b", "ns2:a"):
        index.add(name, unit(hash(name) % 1000), "s", {}, None)
    index.delete("ns1:a")
    index.delete("never-added")
    assert {m.id for m in index.search(unit(5), 10, "s")} == {"ns1:b", "ns2:a"}
    index.clear("ns1:")
    assert {m.id for m in index.search(unit(5), 10, "s")} == {"ns2:a"}
    index.clear()
    assert index.search(unit(5), 10, "s") == []


def test_expired_entries_are_not_found(make_index, clock: FakeClock):
    index = make_index()
    vector = unit(6)
    index.add("short", vector, "s", {}, clock() + 10)
    index.add("long", near(vector, 0.9), "s", {}, clock() + 1000)
    index.add("forever", near(vector, 0.8), "s", {}, None)
    assert [m.id for m in index.search(vector, 5, "s")] == ["short", "long", "forever"]
    clock.advance(11)
    assert [m.id for m in index.search(vector, 5, "s")] == ["long", "forever"]
    clock.advance(1000)
    assert [m.id for m in index.search(vector, 5, "s")] == ["forever"]


def test_search_of_an_empty_index(make_index):
    index = make_index()
    assert index.search(unit(7), 3, "s") == []
    index.delete("nothing")
    index.clear()


def test_a_vector_of_another_size_is_refused(make_index):
    index = make_index()
    index.add("a", unit(8), "s", {}, None)
    with pytest.raises(Exception):  # noqa: B017 - each index raises its own error type
        index.add("b", unit(8, DIM + 4), "s", {}, None)


def test_many_entries_and_the_nearest_is_found(make_index):
    index = make_index()
    base = unit(9)
    for i in range(300):
        index.add(f"n{i}", unit(1000 + i), "s", {}, None)
    index.add("target", near(base, 0.97), "s", {}, None)
    found = index.search(base, 3, "s")
    assert found[0].id == "target"
    assert found[0].score == pytest.approx(0.97, abs=1e-3)


def test_entries_survive_a_reopen_on_disk(tmp_path, clock):
    index = EmbeddedIndex(tmp_path / "ix", clock=clock)
    index.add("a", unit(10), "s", {"p": 1}, None)
    index.add("b", unit(11), "s", {"p": 2}, clock() + 5)
    index.add("c", unit(12), "s", {}, None)
    index.delete("c")
    index.close()
    again = EmbeddedIndex(tmp_path / "ix", clock=clock)
    assert [m.id for m in again.search(unit(10), 1, "s")] == ["a"]
    assert again.search(unit(10), 1, "s")[0].payload == {"p": 1}
    assert len(again) == 2
    clock.advance(6)
    assert {m.id for m in again.search(unit(10), 5, "s")} == {"a"}
    again.close()


def test_the_journal_alone_restores_entries_after_a_crash(tmp_path, clock):
    index = EmbeddedIndex(tmp_path / "ix", clock=clock)
    index.add("a", unit(13), "s", {}, None)
    index.add("b", unit(14), "s", {}, None)
    index.delete("b")
    # no close(): as if the process died; the last line is half written
    journal = next((tmp_path / "ix").glob("journal-*.jsonl"))
    with open(journal, "a") as handle:
        handle.write('{"op":"add","id":"torn","sco')
    again = EmbeddedIndex(tmp_path / "ix", clock=clock)
    assert {m.id for m in again.search(unit(13), 5, "s")} == {"a"}
    again.close()


def test_a_damaged_snapshot_starts_empty_and_is_never_unpickled(tmp_path, clock):
    index = EmbeddedIndex(tmp_path / "ix", clock=clock)
    index.add("a", unit(15), "s", {}, None)
    index.close()
    vectors = next((tmp_path / "ix").glob("vectors-*.npy"))
    import pickle

    vectors.write_bytes(pickle.dumps(["not", "an", "array"]))
    again = EmbeddedIndex(tmp_path / "ix", clock=clock)
    assert again.search(unit(15), 5, "s") == []
    again.add("b", unit(16), "s", {}, None)
    assert [m.id for m in again.search(unit(16), 5, "s")] == ["b"]
    again.close()


def test_the_embedded_index_bounds_its_entries(clock):
    index = EmbeddedIndex(None, max_entries=3, clock=clock)
    for i in range(3):
        index.add(f"e{i}", unit(20 + i), "s", {}, None)
    index.search(unit(20), 1, "s")  # e0 is now the most recently used
    index.add("e3", unit(23), "s", {}, None)
    assert len(index) == 3
    assert {m.id for m in index.search(unit(20), 10, "s")} == {"e0", "e2", "e3"}


def test_the_embedded_index_past_the_exact_limit_still_finds_the_nearest(clock, monkeypatch):
    import llmstash.semantic.embedded_index as module

    monkeypatch.setattr(module, "EXACT_LIMIT", 50)
    index = EmbeddedIndex(None, clock=clock)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2000, 64)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    for i, row in enumerate(noise):
        index.add(f"n{i}", row, "s", {}, None)
    base = unit(30, 64)
    index.add("target", near(base, 0.9), "s", {}, None)
    found = index.search(base, 2, "s")
    assert found[0].id == "target"
    assert found[0].score == pytest.approx(0.9, abs=1e-4)
