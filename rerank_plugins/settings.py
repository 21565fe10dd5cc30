"""Every setting of the reranking stage, declared once.

:class:`RerankerSettings` is the single source: :class:`~rerank_plugins.Reranker`
takes its fields as keyword arguments (and ``settings=`` for a whole object), both
framework drop-ins derive their pydantic fields from it, the settings file written
by ``rerank-ops eval --tune`` stores its fields by name, and the quality harness
replays selection with it. Adding a field here adds it everywhere; a test
enumerates the fields and fails when an entry point misses one.

Time is in seconds everywhere (``timeout_s``, ``stuck_after_s``, the breaker's
``reset_timeout_s``, cache ``ttl_s``). ``timeout_ms`` is accepted for one release
with a ``DeprecationWarning``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, InvalidInputError

FUSION_MODES = ("auto", "none", "linear", "rrf")
NORMALIZATIONS = ("minmax", "rank")

#: Renamed settings: old name -> (new name, conversion). Accepted with a warning.
RENAMED: dict[str, tuple[str, Any]] = {
    "timeout_ms": ("timeout_s", lambda ms: None if ms is None else ms / 1000.0),
    "candidate_depth": ("rerank_depth", lambda depth: depth),
}

#: Settings a JSON settings file cannot hold, and why (the rest all can).
NOT_IN_CONFIG_FILE = {
    "policies": "policies are Python callables; pass them in code",
    "secret": "an operator secret belongs in the RERANK_PLUGINS_SECRET environment variable, "
              "not in a settings file that is copied around",
}

_GROUPS = ("model", "guards", "selection", "rollout", "telemetry")
VARIANT_MODES = ("split", "shadow_compare")


def _setting(default: Any, doc: str, group: str, *, factory: Any = None) -> Any:
    metadata = {"doc": doc, "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class RerankerSettings:
    """The settings of one reranking stage (immutable; change with :meth:`replace`).

    Example::

        settings = RerankerSettings(top_n=5, threshold=0.2, timeout_s=0.3)
        reranker = Reranker(settings=settings)
        tighter = settings.replace(timeout_s=0.1)
    """

    # -- model (used when no Scorer object is given) --------------------------------
    model: str | None = _setting(
        None, "Cross-encoder hub name or local folder; None uses the embedded "
        "all-MiniLM-L6-v2 *bi-encoder* (offline, no download).", "model")
    device: str | None = _setting(
        None, "Torch device ('cpu', 'cuda', 'cuda:1', 'mps'); None picks cuda > mps > cpu.",
        "model")
    dtype: str | None = _setting(
        "auto", "'auto' (bf16 on CPUs with AMX/AVX512-BF16, fp16 on CUDA), 'float32', "
        "'bfloat16' or 'float16'.", "model")
    max_length: int | None = _setting(
        None, "Tokens per (query, document) pair; None = the model's limit.", "model")
    trust_remote_code: bool = _setting(
        False, "Allow custom model code from the model folder or hub.", "model")
    backend: str = _setting(
        "auto", "'auto' (the OpenVINO runtime on a CPU when installed, else torch), "
        "'torch' or 'openvino'. GPUs always run torch.", "model")
    compile_cache_dir: str | None = _setting(
        None, "Where OpenVINO keeps compiled models; None = $RERANK_PLUGINS_CACHE_DIR or "
        "~/.cache/rerank-plugins.", "model")
    exact_top: int | None = _setting(
        None, "Cross-encoder: None re-scores in fp32 only the candidates whose place in the "
        "top exact_head the reduced-precision error (measured at load) could change; an "
        "int re-scores that many of the best instead (0: never).", "model")
    exact_head: int = _setting(
        10, "Cross-encoder: ranks whose order is kept exact (fp32); a request cut in "
        "model order keeps min(top_n, exact_head).", "model")
    exact_band_scale: float = _setting(
        2.0, "Cross-encoder: safety factor on the measured bf16-vs-fp32 error.", "model")
    embedding_store: Any = _setting(
        "memory", "Bi-encoder document embeddings kept across requests: 'memory', a "
        "'redis://' URL, None (embed every document each time), or an EmbeddingStore.",
        "model")
    # -- guards ---------------------------------------------------------------------
    timeout_s: float | None = _setting(
        5.0, "Deadline in seconds for model scores; past it the retrieval order is "
        "returned (status 'fallback', reason 'timeout'). None waits forever.", "guards")
    secondary_scorer: Any = _setting(
        None, "A cheaper Scorer (or a model name/folder) tried when the primary fails "
        "with time left.", "guards")
    cache: Any = _setting(
        "memory", "'memory' (bounded LRU+TTL), a 'redis://host:port/db' URL, None for no "
        "cache, or any PairCache such as RedisCache.", "guards")
    breaker: Any = _setting(
        None, "The primary scorer's CircuitBreaker, or a mapping of CircuitBreaker "
        "arguments ({'failure_threshold': 5, 'reset_timeout_s': 30}); None = those "
        "defaults.", "guards")
    max_candidates: int = _setting(
        1000, "Requests with more candidates are refused (InvalidInputError).", "guards")
    max_inference_threads: int = _setting(
        4, "Bound on model threads, hung ones included; past it requests fall back "
        "with reason 'overloaded'.", "guards")
    max_pending: int = _setting(
        256, "Queued model jobs before new ones are refused ('overloaded').", "guards")
    stuck_after_s: float | None = _setting(
        None, "A model call older than this counts as hung; None = max(1, 2 x timeout_s).",
        "guards")
    semantic_cache: Any = _setting(
        None, "The semantic query layer after the exact pair cache: None/False (off), "
        "True for a SemanticQueryCache on the bundled MiniLM, or a SemanticQueryCache. "
        "Needs a pair cache.", "guards")
    semantic_threshold: float = _setting(
        0.95, "Minimum cosine similarity of an earlier query whose cached scores are "
        "reused (when semantic_cache=True builds the layer).", "guards")
    # -- selection ------------------------------------------------------------------
    top_n: int | None = _setting(
        None, "Results returned (None = all); a per-call top_n wins.", "selection")
    threshold: float | None = _setting(
        None, "Minimum model score in [0, 1] to keep a result.", "selection")
    min_keep: int = _setting(
        1, "Results always kept even below the threshold; 0 allows empty results.",
        "selection")
    relative_cutoff: float | None = _setting(
        None, "Keep only results within this of the best relevance score.", "selection")
    fusion: str = _setting(
        "auto", "'none', 'linear' or 'rrf' fusion with the retrieval score; 'auto' fuses "
        "(linear) for bi-encoders and not for cross-encoders.", "selection")
    alpha: float = _setting(0.5, "Weight of the model score in fusion, in [0, 1].",
                            "selection")
    normalization: str = _setting(
        "minmax", "'minmax' or 'rank' normalization for linear fusion.", "selection")
    calibration: Any = _setting(
        None, "A Calibration or the path of a file from `rerank-ops calibrate`.",
        "selection")
    policies: tuple = _setting(
        (), "Business rules (block_if/boost_if) applied after scoring, also on "
        "fallback and to the unscored tail.", "selection")
    shadow: bool = _setting(
        False, "Score and record, but return the retrieval order.", "selection")
    rerank_depth: int | None = _setting(
        None, "Score only the first N candidates; the rest follow in retrieval order "
        "(dropped when a threshold is set).", "selection")
    # -- rollout --------------------------------------------------------------------
    variants: Any = _setting(
        None, "Rollout arms besides the control: {name: Scorer | Reranker | model name}. "
        "Each has its own breaker; a failing variant falls back like any scorer.",
        "rollout")
    split: Any = _setting(
        None, "Share of traffic per variant, e.g. {'candidate': 0.05}; the rest is the "
        "control. Bucketing is deterministic on the call's key= (fingerprinted), else "
        "the request id.", "rollout")
    variant_mode: str = _setting(
        "split", "'split' serves each arm its share; 'shadow_compare' serves the control "
        "and scores the split's share with the variant in the background, logging both "
        "orders (served=false for the variant).", "rollout")
    context_tokens: int | None = _setting(
        None, "Token budget of the kept results, applied last in selection (after "
        "threshold and top_n): most relevant first until it is full. None = off.",
        "selection")
    context_tokenizer: str | None = _setting(
        None, "How the budget counts tokens: None (ceil(chars / 4)), a Hugging Face "
        "tokenizer folder, or a tiktoken encoding name already in tiktoken's cache.",
        "selection")
    context_truncate_last: bool = _setting(
        False, "Cut the first result that does not fit the budget instead of dropping "
        "it (the most relevant result is always kept, cut if need be).", "selection")
    # -- telemetry and privacy ------------------------------------------------------
    event_log: Any = _setting(
        None, "An EventLog or a directory for the per-request JSONL events.", "telemetry")
    include_text: bool = _setting(
        False, "Write raw query/document text into events (opt-in; hashed otherwise).",
        "telemetry")
    secret: str | bytes | None = _setting(
        None, "Operator secret for fingerprints; default RERANK_PLUGINS_SECRET.",
        "telemetry")

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(self.policies or ()))
        _check(self)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def build(cls, base: RerankerSettings | None = None, **values: Any) -> RerankerSettings:
        """``base`` (or the defaults) with ``values`` applied; renamed keys accepted."""
        values = upgrade_names(values)
        unknown = sorted(set(values) - set(names()))
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {unknown}; known: {', '.join(names())}")
        if base is None:
            return cls(**values)
        return dataclasses.replace(base, **values)

    def replace(self, **values: Any) -> RerankerSettings:
        """A copy with ``values`` changed (validated again)."""
        return self.build(self, **values)

    def changed(self) -> dict[str, Any]:
        """The settings that differ from the defaults."""
        defaults = RerankerSettings()
        return {name: getattr(self, name) for name in names()
                if getattr(self, name) != getattr(defaults, name)}


def names() -> tuple[str, ...]:
    """Every setting's name, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(RerankerSettings))


def specs() -> tuple[dataclasses.Field, ...]:
    """Every setting's dataclass field (``metadata['doc']``, ``metadata['group']``)."""
    return dataclasses.fields(RerankerSettings)


def default_of(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[misc]


def upgrade_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """Map renamed settings to their new names, warning once per call site."""
    out = dict(values)
    for old, (new, convert) in RENAMED.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigurationError(f"pass {new}= or the deprecated {old}=, not both")
        warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=4)
        out[new] = convert(out.pop(old))
    return out


def docstring_args() -> str:
    """The ``Args:`` lines of every setting, generated for docstrings."""
    lines = []
    for spec in specs():
        lines.append(f"    {spec.name}: {spec.metadata['doc']} Defaults to "
                     f"{default_of(spec)!r}.")
    return "\n".join(lines)


def markdown_table() -> str:
    """The settings reference of docs/settings.md (generated; a test compares)."""
    lines = ["| setting | default | in a settings file | meaning |", "|---|---|---|---|"]
    for spec in specs():
        where = "no: " + NOT_IN_CONFIG_FILE[spec.name] if spec.name in NOT_IN_CONFIG_FILE \
            else "yes"
        doc = spec.metadata["doc"].replace("|", "\\|")
        lines.append(f"| `{spec.name}` | `{default_of(spec)!r}` | {where} | {doc} |")
    return "\n".join(lines)


# -- validation ------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_positive_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ConfigurationError(f"{name} must be an int >= 1 or None, got {value!r}")


def _check(s: RerankerSettings) -> None:
    if s.timeout_s is not None and not (_is_number(s.timeout_s) and s.timeout_s > 0):
        raise ConfigurationError("timeout_s must be a number of seconds > 0, or None")
    if s.stuck_after_s is not None and not (_is_number(s.stuck_after_s)
                                            and s.stuck_after_s > 0):
        raise ConfigurationError("stuck_after_s must be > 0 seconds, or None")
    validate_top_n(s.top_n, error=ConfigurationError)
    if s.threshold is not None and not (_is_number(s.threshold) and 0 <= s.threshold <= 1):
        raise ConfigurationError(
            f"threshold={s.threshold!r} must be in [0, 1] (scores are probabilities after "
            "activation/calibration) or None")
    if isinstance(s.min_keep, bool) or not isinstance(s.min_keep, int) or s.min_keep < 0:
        raise ConfigurationError("min_keep must be an int >= 0 (0 allows empty results)")
    if s.relative_cutoff is not None and not (_is_number(s.relative_cutoff)
                                              and 0 <= s.relative_cutoff <= 1):
        raise ConfigurationError("relative_cutoff must be in [0, 1] or None")
    if s.fusion not in FUSION_MODES:
        raise ConfigurationError(f"fusion must be one of {FUSION_MODES}, got {s.fusion!r}")
    if not (_is_number(s.alpha) and 0 <= s.alpha <= 1):
        raise ConfigurationError("alpha (weight of the model score) must be in [0, 1]")
    if s.normalization not in NORMALIZATIONS:
        raise ConfigurationError(f"normalization must be one of {NORMALIZATIONS}")
    _optional_positive_int("rerank_depth", s.rerank_depth)
    if s.backend not in ("auto", "torch", "openvino"):
        raise ConfigurationError(f"backend must be 'auto', 'torch' or 'openvino', got "
                                 f"{s.backend!r}")
    if s.exact_top is not None and (isinstance(s.exact_top, bool)
                                    or not isinstance(s.exact_top, int) or s.exact_top < 0):
        raise ConfigurationError("exact_top must be an int >= 0 or None")
    _optional_positive_int("exact_head", s.exact_head)
    if not (_is_number(s.exact_band_scale) and s.exact_band_scale > 0):
        raise ConfigurationError("exact_band_scale must be > 0")
    _optional_positive_int("max_length", s.max_length)
    for name in ("max_candidates", "max_inference_threads", "max_pending"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    if not all(callable(p) for p in s.policies):
        raise ConfigurationError("policies must be callables (see block_if / boost_if)")
    if s.breaker is not None and not isinstance(s.breaker, Mapping) and not hasattr(
            s.breaker, "acquire"):
        raise ConfigurationError("breaker must be a CircuitBreaker, a mapping of its "
                                 "arguments, or None")
    if s.semantic_cache not in (None, False, True) and not hasattr(s.semantic_cache,
                                                                    "nearest"):
        raise ConfigurationError("semantic_cache must be None, True or a SemanticQueryCache")
    if not (_is_number(s.semantic_threshold) and 0 < s.semantic_threshold <= 1):
        raise ConfigurationError("semantic_threshold must be in (0, 1]")
    _optional_positive_int("context_tokens", s.context_tokens)
    if s.context_tokenizer is not None and (not isinstance(s.context_tokenizer, str)
                                            or not s.context_tokenizer.strip()):
        raise ConfigurationError("context_tokenizer must be a folder, a tiktoken encoding "
                                 "name, or None")
    if s.calibration is not None and not isinstance(s.calibration, (str, Path)) and not \
            hasattr(s.calibration, "apply"):
        raise ConfigurationError("calibration must be a Calibration, a file path, or None")
    _check_rollout(s)


def _check_rollout(s: RerankerSettings) -> None:
    if s.variant_mode not in VARIANT_MODES:
        raise ConfigurationError(f"variant_mode must be one of {VARIANT_MODES}")
    variants = s.variants or {}
    split = s.split or {}
    if not isinstance(variants, Mapping) or not isinstance(split, Mapping):
        raise ConfigurationError("variants and split must be mappings of name -> value")
    if "control" in variants:
        raise ConfigurationError("'control' is the primary scorer; name variants otherwise")
    unknown = sorted(set(split) - set(variants))
    if unknown:
        raise ConfigurationError(f"split names {unknown}, which are not in variants")
    shares = list(split.values())
    if not all(_is_number(v) and 0 <= v <= 1 for v in shares) or sum(shares) > 1 + 1e-9:
        raise ConfigurationError(
            f"split shares must be in [0, 1] and sum to at most 1, got {dict(split)}")


def validate_top_n(top_n: Any, *, error: type[Exception] = InvalidInputError) -> None:
    """``top_n`` is an int >= 1 or None (``error`` for per-call vs constructor values)."""
    if top_n is None:
        return
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise error(f"top_n must be an int or None, got {type(top_n).__name__}")
    if top_n <= 0:
        raise error(f"top_n={top_n} must be >= 1 (or None for all candidates)")
