"""Bi-encoder scorer: cosine similarity of sentence embeddings (the embedded default).

Document embeddings do not depend on the query, so with an ``embedding_store`` a
request embeds only its query and the documents the store has not seen. On the CPU
the encoder runs on OpenVINO when it is installed (see :mod:`.openvino_backend`),
with the same length-sorted token-budget batches as the cross-encoder; otherwise
sentence-transformers' own ``encode`` runs it on torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..device import resolve_device_dtype
from ..errors import CacheError, ConfigurationError
from .base import Identified, ScoreOutput, ScoreRequest
from .default_model import (
    BUNDLED_MODEL_ID,
    bundled_model_path,
    is_local_folder,
    parameters_fingerprint,
)
from .openvino_backend import (
    BackendUnavailable,
    CompiledEncoder,
    choose_backend,
    compile_or_fallback,
    settle_dtype,
)
from .tokens import (
    CHARS_PER_TOKEN_CAP,
    COMPILED_WIDTH_MULTIPLE,
    batch_budget,
    check_batch_budget,
    pad_rows,
    token_budget_batches,
)

logger = logging.getLogger("rerank_plugins.scoring")
#: Pooling modes the OpenVINO path reproduces (anything else stays on torch).
_POOLING = ("mean", "cls", "max")


class BiEncoderScorer(Identified):
    """Scores pairs by cosine similarity of SentenceTransformer embeddings.

    Cheaper than a cross-encoder (documents are encoded independently), so it also
    serves as the secondary scorer of the fallback chain.

    Args:
        model_name_or_path: Hub name or folder; ``None`` uses the embedded
            all-MiniLM-L6-v2 weights (offline). Defaults to ``None``.
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``"auto"`` as for :class:`CrossEncoderScorer`.
        batch_size: Texts per forward pass. ``None`` (default): 8 on a CPU, 128 on
            a GPU (:func:`~.tokens.default_batch_budget`).
        max_length: Tokens per text; ``None`` uses the model's own limit.
        max_batch_tokens: Padded tokens per forward pass (OpenVINO path). ``None``
            (default): on a CPU 2048 at bf16 and 1024 at fp32, 8192 elsewhere.
        backend: ``"auto"`` (default), ``"torch"`` or ``"openvino"``, as for
            :class:`CrossEncoderScorer`.
        compile_cache_dir: Where converted OpenVINO models are kept. Defaults to
            ``$RERANK_PLUGINS_CACHE_DIR`` or ``~/.cache/rerank-plugins``.
        embedding_store: A document-embedding store
            (:class:`~rerank_plugins.cache.embeddings.MemoryEmbeddingStore`,
            :class:`~rerank_plugins.cache.embeddings.RedisEmbeddingStore` or anything
            with ``key``/``get_many``/``set_many``). ``None`` (default) embeds every
            document on every request.

    Example::

        scorer = BiEncoderScorer(embedding_store=MemoryEmbeddingStore())
        [out] = scorer.score_many([ScoreRequest("wing lift", ["airfoil lift", "cats"])])
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        backend: str = "auto",
        compile_cache_dir: str | os.PathLike | None = None,
        embedding_store=None,
    ) -> None:
        check_batch_budget(max_batch_tokens, batch_size)
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        path = model_name_or_path or bundled_model_path()
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.backend = choose_backend(backend, self.device)
        local = is_local_folder(path)
        try:
            model = SentenceTransformer(
                path, device=self.device,
                local_files_only=local or os.environ.get("HF_HUB_OFFLINE") == "1")
        except OSError as exc:
            raise ConfigurationError(f"could not load bi-encoder {path!r}: {exc}") from exc
        if max_length:
            model.max_seq_length = int(max_length)
        self.max_length = int(model.max_seq_length or 256)
        self.tokenizer = model.tokenizer
        self._model_id = BUNDLED_MODEL_ID if model_name_or_path is None else (
            os.path.basename(os.path.normpath(path)) if local else path)
        self._revision = parameters_fingerprint(model)
        self._lock = threading.Lock()
        self.embedding_store = embedding_store
        self._compiled: CompiledEncoder | None = None
        if self.backend == "openvino":
            self._compiled = self._compile(model, backend, compile_cache_dir)
        if self._compiled is None:
            if self.dtype != "float32":
                model.to(getattr(torch, self.dtype))
            self._model = model
        else:
            self._model = None  # the compiled graph holds its own weights
            self.dtype = settle_dtype(self._compiled, self.dtype, self._model_id)
        self.max_batch_tokens, self.batch_size = batch_budget(
            self.device, max_batch_tokens, batch_size, self.dtype)

    def _compile(self, model, requested: str, cache_dir) -> CompiledEncoder | None:
        """Compile the transformer for OpenVINO; ``None`` when ``auto`` falls back."""

        def build() -> CompiledEncoder:
            modules = list(model)
            kinds = [type(m).__name__ for m in modules]
            if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
                raise BackendUnavailable(f"module stack {kinds} is not Transformer+Pooling")
            self._pooling = str(getattr(modules[1], "pooling_mode", ""))
            if self._pooling not in _POOLING:
                raise BackendUnavailable(f"pooling mode {self._pooling!r}")
            self._lower_case = bool(getattr(modules[0], "do_lower_case", False))
            self._input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                                 if n in self.tokenizer.model_input_names]
            return CompiledEncoder(
                modules[0].auto_model.float().eval(), kind="bi-encoder",
                model_id=self._model_id, input_names=self._input_names,
                precisions=[self.dtype], output="last_hidden_state", cache_dir=cache_dir)

        compiled = compile_or_fallback(build, requested=requested, model_id=self._model_id)
        if compiled is None:
            self.backend = "torch"
        return compiled

    @property
    def activation(self) -> str:
        return "cosine"

    @property
    def cache_namespace(self) -> str:
        return (f"bi|{self._model_id}|{self._revision}|len={self.max_length}|"
                f"dtype={self.dtype}|be={self.backend}")

    def describe(self) -> dict[str, str]:
        store = self.embedding_store
        return {"model": self._model_id, "revision": self._revision, "device": self.device,
                "dtype": self.dtype, "kind": "bi-encoder", "backend": self.backend,
                "embedding_store": getattr(store, "backend", type(store).__name__)
                if store is not None else "none"}

    def _count_truncated(self, texts: Sequence[str]) -> int:
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        capped = [t[:cap] for t in texts]
        with self._lock:
            lengths = self.tokenizer(capped, add_special_tokens=True)["input_ids"]
        return sum(
            1 for text, ids in zip(texts, lengths, strict=True)
            if len(ids) > self.max_length or len(text) > cap
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (no store involved)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._compiled is None:
            with self._torch.inference_mode(), self._lock:
                vectors = self._model.encode(list(texts), batch_size=self.batch_size,
                                             convert_to_numpy=True, normalize_embeddings=True,
                                             show_progress_bar=False)
            return np.asarray(vectors, dtype=np.float32)
        return self._embed_compiled(texts)

    def _embed_compiled(self, texts: Sequence[str]) -> np.ndarray:
        if self._lower_case:
            texts = [t.lower() for t in texts]
        with self._lock:
            encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                     padding=False)
        rows = encoded["input_ids"]
        types = encoded.get("token_type_ids")
        out: np.ndarray | None = None
        shape = {"multiple": COMPILED_WIDTH_MULTIPLE, "limit": self.max_length}
        for batch in token_budget_batches([len(r) for r in rows], self.max_batch_tokens,
                                          self.batch_size):
            ids, mask = pad_rows([rows[i] for i in batch], self.tokenizer.pad_token_id or 0,
                                 **shape)
            inputs = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                inputs["token_type_ids"] = pad_rows([types[i] for i in batch], 0, **shape)[0] \
                    if types is not None else np.zeros_like(ids)
            hidden = self._compiled.run(inputs, self.dtype)
            pooled = _pool(hidden, mask, self._pooling)
            if out is None:
                out = np.empty((len(rows), pooled.shape[1]), dtype=np.float32)
            out[batch] = pooled
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _document_vectors(self, texts: list[str]) -> tuple[np.ndarray, set[int]]:
        """Embeddings of ``texts`` (store first), and the indices the store answered."""
        store = self.embedding_store
        if store is None:
            return self.embed(texts), set()
        namespace = self.cache_namespace
        keys = [store.key(namespace, text) for text in texts]
        try:
            found = store.get_many(keys)
        except CacheError:  # a broken store costs speed, never the request
            found = {}
        missing = [i for i, key in enumerate(keys) if key not in found]
        fresh = self.embed([texts[i] for i in missing]) if missing else None
        if fresh is not None:
            try:
                store.set_many({keys[i]: fresh[row] for row, i in enumerate(missing)})
            except CacheError:
                pass
        dimension = fresh.shape[1] if fresh is not None else next(iter(found.values())).size
        vectors = np.empty((len(texts), dimension), dtype=np.float32)
        for i, key in enumerate(keys):
            if key in found:
                vectors[i] = found[key]
        if fresh is not None:
            vectors[missing] = fresh
        return vectors, set(range(len(texts))) - set(missing)

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        """Cosine of each text to its query.

        ``extra["embeddings_from_store"]`` counts the texts whose vector came from
        the embedding store (0 without one).
        """
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        # queries are capped like texts: a 1 MB query must not cost a full tokenization
        queries = list(dict.fromkeys(r.query[:cap] for r in requests))
        texts = list(dict.fromkeys(t[:cap] for r in requests for t in r.texts))
        started = time.perf_counter()
        query_emb = self.embed(queries)
        text_emb, from_store = self._document_vectors(texts) if texts else (None, set())
        elapsed = time.perf_counter() - started
        q_index = {q: i for i, q in enumerate(queries)}
        t_index = {t: i for i, t in enumerate(texts)}
        total = max(1, sum(len(r.texts) for r in requests))
        outputs = []
        for request in requests:
            q = query_emb[q_index[request.query[:cap]]]
            rows = [t_index[t[:cap]] for t in request.texts]
            sims = (text_emb[rows] @ q).tolist() if rows else []
            outputs.append(ScoreOutput([float(s) for s in sims],
                                       self._count_truncated(request.texts),
                                       elapsed * len(request.texts) / total,
                                       extra={"embeddings_from_store": sum(
                                           row in from_store for row in rows)}))
        return outputs


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Sentence vectors from token states, as sentence-transformers' ``Pooling`` does."""
    if mode == "cls":
        return hidden[:, 0].astype(np.float32)
    weights = mask[:, :, None].astype(np.float32)
    if mode == "max":
        return np.where(weights > 0, hidden, -1e9).max(axis=1).astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    return (summed / np.maximum(weights.sum(axis=1), 1e-9)).astype(np.float32)
