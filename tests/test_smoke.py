"""The shortest path: a miss, then a hit with the original id, and one upstream call."""

import llmstash
from llmstash import completion
from llmstash.caching import Cache


def test_second_identical_call_is_a_hit(upstream):
    llmstash.cache = Cache()
    kwargs = dict(model="openai/demo", messages=[{"role": "user", "content": "Tell me a joke."}], api_base=upstream.base_url)
    first = completion(**kwargs)
    second = completion(**kwargs)
    assert first._hidden_params["cache_hit"] is False
    assert second._hidden_params["cache_hit"] is True
    assert second.id == first.id and second.created == first.created
    assert second.choices[0].message.content == first.choices[0].message.content
    assert upstream.call_count("chat/completions") == 1
