"""Scorers: the models behind the pipeline, all behind the :class:`Scorer` protocol."""

from .base import ScoreOutput, Scorer, ScoreRequest
from .default_model import DEFAULT_CROSS_ENCODER, bundled_model_path

__all__ = [
    "DEFAULT_CROSS_ENCODER", "BiEncoderScorer", "load_scorer", "CrossEncoderScorer", "ScoreOutput",
    "RemoteScorer", "ScoreRequest", "Scorer", "bundled_model_path",
]


def load_scorer(model: str | None, *, kind: str = "cross", device: str | None = None,
                dtype: str | None = "auto", max_length: int | None = None,
                trust_remote_code: bool = False, backend: str = "auto",
                compile_cache_dir: str | None = None, exact_top: int | None = None,
                exact_head: int = 10, exact_band_scale: float = 2.0,
                embedding_store=None) -> Scorer:
    """Load the scorer a ``model`` setting names.

    Args:
        model: ``None`` for the embedded all-MiniLM-L6-v2 bi-encoder (offline); a hub
            name or local folder otherwise.
        kind: ``"cross"`` (default) or ``"bi"``: how to load a named ``model``.
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        max_length: Tokens per pair; ``None`` uses the model's own limit.
        trust_remote_code: Passed to the cross-encoder loader.
        backend: ``"auto"`` (OpenVINO on the CPU when installed, else torch),
            ``"torch"`` or ``"openvino"``. Defaults to ``"auto"``.
        compile_cache_dir: Where OpenVINO keeps converted models. Defaults to
            ``$RERANK_PLUGINS_CACHE_DIR`` or ``~/.cache/rerank-plugins``.
        exact_top: Cross-encoder only. ``None`` (default): re-score in fp32 only the
            candidates whose place in the top ``exact_head`` the reduced-precision
            error measured at load could change; an integer re-scores that many of
            the best candidates instead (``0``: never).
        exact_head: Cross-encoder only: ranks kept in fp32 order. Defaults to 10.
        exact_band_scale: Cross-encoder only: safety factor on the measured error.
            Defaults to 2.0.
        embedding_store: Bi-encoder only: a document-embedding store
            (``rerank_plugins.cache.embeddings``); ``None`` embeds every document.

    Example::

        scorer = load_scorer("/models/ms-marco-MiniLM-L-6-v2")
    """
    from ..errors import ConfigurationError

    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigurationError(f"model must be a hub name, a folder or None, got {model!r}")
    if kind not in ("cross", "bi"):
        raise ConfigurationError(f"kind must be 'cross' or 'bi', got {kind!r}")
    if model is None or kind == "bi":
        from .bi_encoder import BiEncoderScorer

        return BiEncoderScorer(model, device=device, dtype=dtype, max_length=max_length,
                               backend=backend, compile_cache_dir=compile_cache_dir,
                               embedding_store=embedding_store)
    if embedding_store is not None:
        raise ConfigurationError("embedding_store is a bi-encoder setting (kind='bi')")
    from .cross_encoder import CrossEncoderScorer

    return CrossEncoderScorer(model, device=device, dtype=dtype, max_length=max_length,
                              trust_remote_code=trust_remote_code, backend=backend,
                              compile_cache_dir=compile_cache_dir, exact_top=exact_top,
                              exact_head=exact_head, exact_band_scale=exact_band_scale)


def __getattr__(name: str):
    # torch/sentence-transformers load only when a local scorer is asked for
    if name == "CrossEncoderScorer":
        from .cross_encoder import CrossEncoderScorer

        return CrossEncoderScorer
    if name == "BiEncoderScorer":
        from .bi_encoder import BiEncoderScorer

        return BiEncoderScorer
    if name == "RemoteScorer":  # httpx loads only when a remote scorer is asked for
        from .remote import RemoteScorer

        return RemoteScorer
    raise AttributeError(name)
