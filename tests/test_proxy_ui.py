"""The status page (/ui) in headless Chromium (Debian's package, installed by the test if missing):
the rendered DOM holds the figures, and the screenshot is a real page, not a blank one."""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmstash.testing import MockUpstream
from llmstash.testing.proxy import ProxyThread, ensure_command

MASTER = "sk-master-0123456789"
MODEL = "gpt-4o-mini"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-proxy-server",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_command("chromium", "chromium")


@pytest.fixture
def proxy(upstream: MockUpstream) -> Iterator[ProxyThread]:
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream.base_url},
                "model_info": {"input_cost_per_token": 0.0000025, "output_cost_per_token": 0.00001},
            }
        ],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
        "general_settings": {"master_key": MASTER},
    }
    with ProxyThread(config) as running:
        headers = {"Authorization": f"Bearer {MASTER}"}
        for question in ["What is a cache?", "What is a proxy?"] * 4:  # 2 misses, 6 hits
            body = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
            assert httpx.post(f"{running.base_url}/chat/completions", json=body, headers=headers).status_code == 200
        yield running


def browse(chromium: str, tmp_path: Path, url: str, *extra: str) -> str:
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, width, height = 8, b"", 0, 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    return width, height, zlib.decompress(idat)


def test_status_page_renders_the_figures(chromium: str, proxy: ProxyThread, tmp_path: Path) -> None:
    data = httpx.get(f"{proxy.url}/ui/data", headers={"Authorization": f"Bearer {MASTER}"}).json()
    totals = data["totals"]
    assert (totals["hits"], totals["misses"], data["entries"]) == (6, 2, 2)
    dom = browse(chromium, tmp_path, f"{proxy.url}/ui?key={MASTER}", "--dump-dom")
    assert 'id="hit-rate">75.0%<' in dom
    assert 'id="requests">8<' in dom
    assert 'id="entries">2<' in dom
    assert f'id="tokens">{totals["tokens_saved"]}<' in dom and totals["tokens_saved"] > 0
    assert f'id="dollars">${totals["dollars_saved"]:.4f}<' in dom and totals["dollars_saved"] > 0
    assert "Slowest upstream calls avoided" in dom and "<code>" in dom  # rows of the slowest-avoided table
    assert dom.count("<rect") >= 2  # the hit-rate chart drew its bars
    assert MASTER not in dom


def test_status_page_screenshot_is_not_blank(chromium: str, proxy: ProxyThread, tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    browse(chromium, tmp_path, f"{proxy.url}/ui?key={MASTER}", f"--screenshot={shot}", "--window-size=1280,900")
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1280, 900)
    assert len(set(pixels)) > 40  # a blank or one-colour page has a handful of distinct byte values
    assert shot.stat().st_size > 20_000


def test_status_page_needs_the_master_key(chromium: str, proxy: ProxyThread, tmp_path: Path) -> None:
    login = browse(chromium, tmp_path, f"{proxy.url}/ui", "--dump-dom")
    assert "needs the master key" in login and "hit-rate" not in login
    assert httpx.get(f"{proxy.url}/ui?key=sk-wrong-key-0000").status_code == 401
    assert httpx.get(f"{proxy.url}/ui/data").status_code == 401
    assert httpx.get(f"{proxy.url}/ui/data", headers={"Authorization": "Bearer sk-wrong-key-0000"}).status_code == 401
    signed_in = httpx.post(f"{proxy.url}/ui/login", data={"key": MASTER})
    assert signed_in.status_code == 303 and MASTER not in signed_in.headers["set-cookie"]
    with httpx.Client(base_url=proxy.url) as browser:
        browser.post("/ui/login", data={"key": MASTER})
        assert browser.get("/ui/data").json()["totals"]["hits"] == 6
        assert browser.get("/v1/models").status_code == 401  # the page's cookie is not an API key
