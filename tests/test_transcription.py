"""Transcriptions: keyed on the SHA-256 of the audio plus the parameters, in any input form."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

import llmstash
from llmstash.caching import Cache

AUDIO = os.urandom(4096)


def hit(response) -> bool:
    return response._hidden_params["cache_hit"] is True


@pytest.fixture
def audio_path(tmp_path):
    path = tmp_path / "meeting.mp3"
    path.write_bytes(AUDIO)
    return path


def test_path_bytes_file_object_and_tuple_share_one_entry(upstream, audio_path):
    llmstash.cache = Cache()
    base = dict(model="whisper-1", api_base=upstream.base_url)
    first = llmstash.transcription(file=str(audio_path), **base)
    forms = [AUDIO, audio_path, io.BytesIO(AUDIO), ("other-name.wav", AUDIO)]
    answers = [llmstash.transcription(file=form, **base) for form in forms]
    assert not hit(first) and all(hit(a) for a in answers)
    assert {a.text for a in answers} == {first.text}
    assert upstream.call_count("audio/transcriptions") == 1
    sent = upstream.calls[0].body
    assert sent["model"] == "whisper-1"
    assert sent["file"]["size"] == len(AUDIO) and sent["file"]["filename"] == "meeting.mp3"


def test_async_twin_shares_entries_with_sync(upstream):
    llmstash.cache = Cache()
    first = llmstash.transcription(model="whisper-1", file=AUDIO, api_base=upstream.base_url)
    second = asyncio.run(llmstash.atranscription(model="whisper-1", file=io.BytesIO(AUDIO), api_base=upstream.base_url))
    assert hit(second) and second.text == first.text
    assert upstream.call_count() == 1


@pytest.mark.parametrize(
    "change",
    [{"language": "fr"}, {"prompt": "names: Ada, Alan"}, {"temperature": 0.4}, {"response_format": "verbose_json"}],
)
def test_parameters_are_keyed(upstream, change):
    llmstash.cache = Cache()
    base = dict(model="whisper-1", file=AUDIO, api_base=upstream.base_url)
    llmstash.transcription(**base)
    changed = llmstash.transcription(**base, **change)
    assert not hit(changed)
    assert upstream.call_count() == 2
    for name, value in change.items():
        assert upstream.calls[1].body[name] == str(value)


def test_different_audio_is_a_different_entry(upstream):
    llmstash.cache = Cache()
    llmstash.transcription(model="whisper-1", file=AUDIO, api_base=upstream.base_url)
    other = llmstash.transcription(model="whisper-1", file=AUDIO + b"\x00", api_base=upstream.base_url)
    assert not hit(other) and upstream.call_count() == 2


def test_plain_text_response_format_becomes_text(upstream):
    llmstash.cache = Cache()
    answer = llmstash.transcription(model="whisper-1", file=AUDIO, response_format="text", api_base=upstream.base_url)
    again = llmstash.transcription(model="whisper-1", file=AUDIO, response_format="text", api_base=upstream.base_url)
    assert answer.text.startswith("Transcript of 4096 bytes")
    assert hit(again) and again.text == answer.text


def test_audio_bytes_never_enter_the_key_or_the_entry(upstream):
    llmstash.cache = Cache()
    marker = b"UNIQUE-AUDIO-MARKER-" * 10
    answer = llmstash.transcription(model="whisper-1", file=marker, api_base=upstream.base_url)
    key = answer._hidden_params["cache_key"]
    stored = llmstash.cache.storage.get(key)
    assert stored is not None and b"UNIQUE-AUDIO-MARKER" not in stored
    assert "UNIQUE" not in key


def test_azure_transcription_path(upstream):
    llmstash.transcription(
        model="azure/whisper-dep", file=AUDIO, api_base=upstream.azure_base, api_key="az", api_version="2024-06-01"
    )
    recorded = upstream.calls[0]
    assert recorded.path == "/openai/deployments/whisper-dep/audio/transcriptions?api-version=2024-06-01"
    assert recorded.headers["api-key"] == "az"


def test_mock_response_transcription_needs_no_network():
    llmstash.cache = Cache()
    first = llmstash.transcription(model="whisper-1", file=AUDIO, mock_response="hello world")
    second = llmstash.transcription(model="whisper-1", file=AUDIO, mock_response="hello world")
    assert first.text == "hello world" and hit(second)


def test_bad_file_argument_is_a_clear_error():
    with pytest.raises(llmstash.ConfigurationError, match="file= must be a path, bytes"):
        llmstash.transcription(model="whisper-1", file=12345, mock_response="x")


def test_supported_call_types_can_exclude_transcriptions(upstream):
    llmstash.cache = Cache(supported_call_types=["completion"])
    llmstash.transcription(model="whisper-1", file=AUDIO, api_base=upstream.base_url)
    again = llmstash.transcription(model="whisper-1", file=AUDIO, api_base=upstream.base_url)
    assert not hit(again) and upstream.call_count() == 2
