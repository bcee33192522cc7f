"""Running the proxy on uvicorn (httptools and uvloop when installed, as the ``proxy`` extra does).

One worker serves the app object directly; ``workers > 1`` starts uvicorn's worker processes,
each loading the config named by ``LLMSTASH_PROXY_CONFIG``. On SIGTERM or Ctrl-C uvicorn stops
accepting connections, lets requests in flight finish (up to ``graceful_seconds``), then the
app's shutdown closes the cache, which sends writes still buffered (``redis_flush_size``).
"""

from __future__ import annotations

import logging
import os

from llmstash.exceptions import ConfigurationError
from llmstash.proxy.config import load_config

logger = logging.getLogger("llmstash.proxy")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000


def serve(
    config_path: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    log_level: str = "info",
    graceful_seconds: float = 30.0,
) -> None:
    """Serve the proxy until stopped."""
    try:
        import uvicorn
    except ImportError:
        raise ImportError('the proxy needs its extra: pip install "llmstash[proxy]"') from None
    from llmstash.proxy.app import CONFIG_ENV, create_app

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    if not 0 <= port < 65536:
        raise ConfigurationError(f"port must be 0-65535, got {port!r}")
    config = load_config(config_path)  # checked here, once, before any worker starts
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    cache_type = (config.cache_params or {}).get("type", "local") if config.cache_params is not None else None
    if workers > 1 and cache_type == "local":
        logger.warning(
            "llmstash proxy: %d workers with an in-memory cache each keep their own entries; use type redis or disk to share them",
            workers,
        )
    if config.master_key is None:
        logger.warning(
            "llmstash proxy: no general_settings.master_key: the API is open to anyone who can reach %s:%d", host, port
        )
    logger.info(
        "llmstash proxy on http://%s:%d: %d models, cache %s, %d worker(s)",
        host,
        port,
        len(config.model_names),
        cache_type or "off",
        workers,
    )
    options = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,  # request lines could carry a key in a query string (/ui?key=...)
        "server_header": False,
        "proxy_headers": False,  # the proxy never uses client addresses
        "timeout_graceful_shutdown": graceful_seconds,
    }
    if workers == 1:
        uvicorn.run(create_app(config), **options)  # type: ignore[arg-type]
    else:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
        uvicorn.run("llmstash.proxy.app:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
