"""Bi-encoder scorer: cosine similarity of sentence embeddings (the embedded default)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from ..device import resolve_device_dtype
from ..errors import ConfigurationError
from .base import ScoreOutput, ScoreRequest
from .default_model import (
    BUNDLED_MODEL_ID,
    bundled_model_path,
    is_local_folder,
    parameters_fingerprint,
)
from .tokens import CHARS_PER_TOKEN_CAP


class BiEncoderScorer:
    """Scores pairs by cosine similarity of SentenceTransformer embeddings.

    Cheaper than a cross-encoder (documents are encoded independently), so it also
    serves as the secondary scorer of the fallback chain.

    Args:
        model_name_or_path: Hub name or folder; ``None`` uses the embedded
            all-MiniLM-L6-v2 weights (offline). Defaults to ``None``.
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``"auto"`` as for :class:`CrossEncoderScorer`.
        batch_size: Texts per forward pass. Defaults to 64.

    Example::

        scorer = BiEncoderScorer()
        [out] = scorer.score_many([ScoreRequest("wing lift", ["airfoil lift", "cats"])])
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        path = model_name_or_path or bundled_model_path()
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        local = is_local_folder(path)
        try:
            model = SentenceTransformer(
                path, device=self.device,
                local_files_only=local or os.environ.get("HF_HUB_OFFLINE") == "1")
        except OSError as exc:
            raise ConfigurationError(f"could not load bi-encoder {path!r}: {exc}") from exc
        if self.dtype != "float32":
            model.to(getattr(torch, self.dtype))
        if max_length:
            model.max_seq_length = int(max_length)
        self._model = model
        self.max_length = int(model.max_seq_length or 256)
        self.batch_size = int(batch_size)
        self.tokenizer = model.tokenizer
        self._model_id = BUNDLED_MODEL_ID if model_name_or_path is None else (
            os.path.basename(os.path.normpath(path)) if local else path)
        self._revision = parameters_fingerprint(model)
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def activation(self) -> str:
        return "cosine"

    @property
    def cache_namespace(self) -> str:
        return f"bi|{self._model_id}|{self._revision}|len={self.max_length}|dtype={self.dtype}"

    def describe(self) -> dict[str, str]:
        return {"model": self._model_id, "revision": self._revision, "device": self.device,
                "dtype": self.dtype, "kind": "bi-encoder"}

    def _count_truncated(self, texts: Sequence[str]) -> int:
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        capped = [t[:cap] for t in texts]
        with self._lock:
            lengths = self.tokenizer(capped, add_special_tokens=True)["input_ids"]
        return sum(
            1 for text, ids in zip(texts, lengths, strict=True)
            if len(ids) > self.max_length or len(text) > cap
        )

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        torch = self._torch
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        # queries are capped like texts: a 1 MB query must not cost a full tokenization
        queries = list(dict.fromkeys(r.query[:cap] for r in requests))
        texts = list(dict.fromkeys(t[:cap] for r in requests for t in r.texts))
        started = time.perf_counter()
        with torch.inference_mode(), self._lock:
            query_emb = self._model.encode(queries, batch_size=self.batch_size,
                                           convert_to_tensor=True, normalize_embeddings=True,
                                           show_progress_bar=False)
            text_emb = self._model.encode(texts, batch_size=self.batch_size,
                                          convert_to_tensor=True, normalize_embeddings=True,
                                          show_progress_bar=False)
        elapsed = time.perf_counter() - started
        q_index = {q: i for i, q in enumerate(queries)}
        t_index = {t: i for i, t in enumerate(texts)}
        total = max(1, sum(len(r.texts) for r in requests))
        outputs = []
        for request in requests:
            q = query_emb[q_index[request.query[:cap]]].float()
            rows = [t_index[t[:cap]] for t in request.texts]
            if rows:
                sims = (text_emb[rows].float() @ q).cpu().tolist()
            else:
                sims = []
            outputs.append(ScoreOutput([float(s) for s in sims],
                                       self._count_truncated(request.texts),
                                       elapsed * len(request.texts) / total))
        return outputs
