"""``Router``: several deployments behind model names, with caching groups.

    router = llmstash.Router(
        model_list=[
            {"model_name": "gpt-3.5", "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": ...}},
            {"model_name": "gpt-4", "litellm_params": {"model": "azure/gpt4-eu", "api_base": ...}},
        ],
        caching_groups=[("gpt-3.5", "gpt-4")],
        cache_responses=True,
    )
    router.completion(model="gpt-3.5", messages=[...])

Deployments of one ``model_name`` are used in turn (round robin) and share cache entries; model
names in one caching group share entries too, whatever deployment answered. With
``cache_responses=True`` the router keeps its own cache, ``Cache(**cache_kwargs)``; otherwise its
calls use ``llmstash.cache`` like any other call. A ``litellm_params`` value written
``"os.environ/NAME"`` is read from the environment variable NAME at call time.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable
from typing import Any

from llmstash._engine import ACTIVE, arun, run
from llmstash.caching.cache import Cache
from llmstash.exceptions import ConfigurationError

ENV_PREFIX = "os.environ/"


def _resolve_env(params: dict[str, Any]) -> dict[str, Any]:
    resolved = {}
    for name, value in params.items():
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            variable = value[len(ENV_PREFIX) :]
            if variable not in os.environ:
                raise ConfigurationError(
                    f"litellm_params {name!r} refers to the environment variable {variable}, which is not set"
                )
            value = os.environ[variable]
        resolved[name] = value
    return resolved


def _check_model_list(model_list: Any) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(model_list, list) or not model_list:
        raise ConfigurationError("model_list must be a non-empty list of {'model_name': ..., 'litellm_params': {'model': ...}}")
    deployments: dict[str, list[dict[str, Any]]] = {}
    for position, entry in enumerate(model_list):
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        name = entry.get("model_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or not isinstance(params, dict) or not isinstance(params.get("model"), str):
            raise ConfigurationError(
                f"model_list[{position}] must look like {{'model_name': 'gpt-4', 'litellm_params': {{'model': 'openai/gpt-4', ...}}}}"
            )
        deployments.setdefault(name, []).append(dict(params))
    return deployments


def _check_groups(caching_groups: Iterable[Iterable[str]] | None, names: set[str]) -> dict[str, str]:
    """model_name → the caching group's shared name."""
    group_of: dict[str, str] = {}
    for group in caching_groups or ():
        members = [group] if isinstance(group, str) else list(group)
        unknown = [m for m in members if m not in names]
        if unknown:
            raise ConfigurationError(
                f"caching_groups names {unknown[0]!r}, which is not a model_name in model_list: {sorted(names)}"
            )
        shared = "|".join(sorted(members))
        for member in members:
            if member in group_of:
                raise ConfigurationError(f"model_name {member!r} is in more than one caching group")
            group_of[member] = shared
    return group_of


class Router:
    """Routes calls by ``model_name`` to deployments, in turn, caching by model name or group.

    Args:
        model_list: ``[{"model_name": ..., "litellm_params": {"model": ..., "api_base": ..., ...}}]``.
        caching_groups: tuples of model names whose answers are interchangeable and share entries.
        cache_responses: give the router its own cache, built from ``cache_kwargs``.
        cache_kwargs: arguments of that ``Cache`` (type, ttl, namespace, ...).
        timeout: default ``timeout`` of every call, in seconds.
    """

    def __init__(
        self,
        model_list: list[dict[str, Any]],
        caching_groups: list[tuple[str, ...]] | None = None,
        cache_responses: bool = False,
        cache_kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.model_list = model_list
        self._deployments = _check_model_list(model_list)
        self._group_of = _check_groups(caching_groups, set(self._deployments))
        self._turns = {name: itertools.count() for name in self._deployments}
        self._turn_lock = threading.Lock()
        if cache_kwargs is not None and not cache_responses:
            raise ConfigurationError("cache_kwargs is used only with cache_responses=True")
        self.cache: Cache | None = Cache(**(cache_kwargs or {})) if cache_responses else None
        self.timeout = timeout

    def _deployment(self, model_name: Any) -> dict[str, Any]:
        deployments = self._deployments.get(model_name)
        if deployments is None:
            raise ConfigurationError(f"model {model_name!r} is not a model_name of this router: {sorted(self._deployments)}")
        with self._turn_lock:
            turn = next(self._turns[model_name])
        return _resolve_env(deployments[turn % len(deployments)])

    def _arguments(self, model_name: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> tuple[dict[str, Any], str]:
        params = self._deployment(model_name)
        if self.timeout is not None:
            params.setdefault("timeout", self.timeout)
        return {**params, **payload, **kwargs}, self._group_of.get(model_name, model_name)

    def _cache(self) -> Any:
        return self.cache if self.cache is not None else ACTIVE

    def _run(self, call_type: str, model: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        arguments, group = self._arguments(model, payload, kwargs)
        return run(call_type, arguments, cache=self._cache(), caching_group=group)

    async def _arun(self, call_type: str, model: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        arguments, group = self._arguments(model, payload, kwargs)
        return await arun(call_type, arguments, cache=self._cache(), caching_group=group)

    def completion(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self._run("completion", model, {"messages": messages}, kwargs)

    async def acompletion(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return await self._arun("acompletion", model, {"messages": messages}, kwargs)

    def text_completion(self, model: str, prompt: Any, **kwargs: Any) -> Any:
        return self._run("text_completion", model, {"prompt": prompt}, kwargs)

    async def atext_completion(self, model: str, prompt: Any, **kwargs: Any) -> Any:
        return await self._arun("atext_completion", model, {"prompt": prompt}, kwargs)

    def embedding(self, model: str, input: Any, **kwargs: Any) -> Any:
        return self._run("embedding", model, {"input": input}, kwargs)

    async def aembedding(self, model: str, input: Any, **kwargs: Any) -> Any:
        return await self._arun("aembedding", model, {"input": input}, kwargs)

    def transcription(self, model: str, file: Any, **kwargs: Any) -> Any:
        return self._run("transcription", model, {"file": file}, kwargs)

    async def atranscription(self, model: str, file: Any, **kwargs: Any) -> Any:
        return await self._arun("atranscription", model, {"file": file}, kwargs)
