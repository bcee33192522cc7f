"""The caching proxy: an OpenAI-compatible HTTP server in front of the llmstash Router.

    llmstash serve --config config.yaml --port 4000

``create_app(load_config("config.yaml"))`` is the ASGI app; ``serve`` runs it on uvicorn. The
routes, headers, auth and the status page are described in README ("The proxy"). Needs the
extra: ``pip install "llmstash[proxy]"``.
"""

from __future__ import annotations

from llmstash.proxy.config import ProxyConfig, load_config, parse_config

__all__ = ["ProxyConfig", "create_app", "load_config", "parse_config", "serve"]


def __getattr__(name: str) -> object:
    # the app and the server import starlette and uvicorn: only when asked for
    if name == "create_app":
        from llmstash.proxy.app import create_app

        return create_app
    if name == "serve":
        from llmstash.proxy.server import serve

        return serve
    raise AttributeError(name)
