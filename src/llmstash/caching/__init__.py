"""The cache: ``Cache``, ``CacheMode`` and the module-level switches, as in LiteLLM's dialect."""

from llmstash._core.policy import CALL_TYPES, CacheMode
from llmstash.caching.cache import Cache
from llmstash.caching.switches import disable_cache, enable_cache, update_cache

__all__ = ["CALL_TYPES", "Cache", "CacheMode", "disable_cache", "enable_cache", "update_cache"]
