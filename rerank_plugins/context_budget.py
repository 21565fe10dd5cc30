"""Context token budget: keep ranked documents, most relevant first, until it is full.

After reranking, an application pastes the kept documents into an LLM prompt with a
limited context. :class:`ContextBudget` walks the ranked list in order and keeps
whole documents while their tokens fit in ``context_tokens``; the first one that
does not fit ends the walk (a less relevant document never displaces a more
relevant one). With ``truncate_last=True`` that first one is cut to the tokens left
instead. The most relevant document is always kept: when it alone is over the
budget it is cut to the budget (an empty context is never what a caller wants).

Tokens are counted with, in order of precision:

* a Hugging Face tokenizer folder (``tokenizer="/models/llama"``) or a loaded
  tokenizer object (anything with ``encode``/``decode``), counted without special
  tokens;
* a tiktoken encoding name (``"cl100k_base"``, ``"o200k_base"``...) -- only when the
  encoding file is already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``), because
  tiktoken otherwise downloads it on first use, and this library never downloads at
  run time -- or a ready ``tiktoken.Encoding``;
* no tokenizer: an approximation, ``ceil(characters / 4)`` (OpenAI's rule of thumb
  for English; see docs/context-budget.md for how far it is from real tokenizers on
  the development collections). ``BudgetResult.approximate`` says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import ConfigurationError
from .telemetry import contract as c
from .telemetry import instruments

__all__ = ["APPROX_CHARS_PER_TOKEN", "BudgetResult", "ContextBudget"]

#: Characters per token assumed when no tokenizer is given.
APPROX_CHARS_PER_TOKEN = 4

T = TypeVar("T")


@dataclass(frozen=True)
class BudgetResult(Generic[T]):
    """What the budget kept.

    Attributes:
        kept: The items kept, in their ranked order.
        cut: The items left out because the budget was full, in ranked order.
        tokens_kept: Tokens of the kept texts (the truncated text for a cut-short last
            item), plus ``per_document_overhead`` for each kept item.
        truncated_text: The shortened text of ``kept[-1]`` when it was cut to fit,
            else ``None``.
        approximate: True when tokens were estimated from characters.
    """

    kept: list[T]
    cut: list[T]
    tokens_kept: int
    truncated_text: str | None = None
    approximate: bool = False
    token_counts: list[int] = field(default_factory=list, repr=False)


class ContextBudget:
    """Keeps ranked items until ``context_tokens`` are used.

    Args:
        context_tokens: Token budget for the documents. Defaults to 3000.
        tokenizer: ``None`` (approximation), a Hugging Face tokenizer folder, a
            tiktoken encoding name whose file is cached locally, or a tokenizer object
            with ``encode`` (and ``decode`` for truncation). Defaults to ``None``.
        truncate_last: Cut the first document that does not fit to the tokens left,
            instead of leaving it out. Defaults to False.
        per_document_overhead: Tokens each kept document costs besides its text
            (separators, a "[1]" label). Defaults to 0.
        min_truncated_tokens: With ``truncate_last``, do not add a cut document
            shorter than this many tokens (a stub helps nobody). Defaults to 16.

    Example::

        budget = ContextBudget(context_tokens=1500)
        result = budget.apply(reranked.items)
        context = "\\n\\n".join(item.text for item in result.kept)
    """

    def __init__(self, context_tokens: int = 3000, *, tokenizer: Any = None,
                 truncate_last: bool = False, per_document_overhead: int = 0,
                 min_truncated_tokens: int = 16) -> None:
        for name, value, low in (("context_tokens", context_tokens, 1),
                                 ("per_document_overhead", per_document_overhead, 0),
                                 ("min_truncated_tokens", min_truncated_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{name} must be an int >= {low}, got {value!r}")
        self.context_tokens = context_tokens
        self.truncate_last = bool(truncate_last)
        self.per_document_overhead = per_document_overhead
        self.min_truncated_tokens = min_truncated_tokens
        self._encode, self._prefix, self.tokenizer_name = _resolve_tokenizer(tokenizer)

    @property
    def approximate(self) -> bool:
        return self._encode is None

    def count(self, text: str) -> int:
        """Tokens of ``text`` (estimated when no tokenizer was given)."""
        if not text:
            return 0
        if self._encode is None:
            return math.ceil(len(text) / APPROX_CHARS_PER_TOKEN)
        return len(self._encode(text))

    def truncate(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` (its own characters, never a re-decoded
        version) that is at most ``tokens`` tokens."""
        if tokens <= 0:
            return ""
        if self._encode is None:
            return text[:tokens * APPROX_CHARS_PER_TOKEN]
        if self._prefix is None:
            raise ConfigurationError("the tokenizer cannot map tokens back to text "
                                     "(no decode()): cannot truncate")
        keep = tokens
        while keep > 0:
            # a cut can make the tokenizer merge the tail differently: shrink until
            # the prefix itself counts within the budget
            prefix = self._prefix(text, keep)
            over = len(self._encode(prefix)) - tokens
            if over <= 0:
                return prefix
            keep -= over
        return ""

    def apply(self, items: Sequence[T], text: Callable[[T], str] | None = None,
              *, record: bool = True) -> BudgetResult[T]:
        """Keep ``items`` (most relevant first) until the budget is full.

        Args:
            items: Ranked items: :class:`~rerank_plugins.RankedItem`, candidates,
                strings, or anything ``text`` reads.
            text: How to read an item's text. Defaults to ``item.text`` (or the item
                itself when it is a str).
            record: Count tokens kept and documents cut in the telemetry. Defaults to
                True.
        """
        read = text or _default_text
        kept: list[T] = []
        counts: list[int] = []
        used = 0
        truncated: str | None = None
        stop = len(items)
        for index, item in enumerate(items):
            body = read(item)
            if not isinstance(body, str):
                raise TypeError(f"item {index} has text of type {type(body).__name__}")
            tokens = self.count(body) + self.per_document_overhead
            if used + tokens <= self.context_tokens:
                kept.append(item)
                counts.append(tokens)
                used += tokens
                continue
            room = self.context_tokens - used - self.per_document_overhead
            if not kept or (self.truncate_last and room >= self.min_truncated_tokens):
                truncated = self.truncate(body, max(0, room))
                tokens = self.count(truncated) + self.per_document_overhead
                kept.append(item)
                counts.append(tokens)
                used += tokens
                stop = index + 1
            else:
                stop = index
            break
        cut = list(items[stop:]) if stop < len(items) else []
        result = BudgetResult(kept, cut, used, truncated, self.approximate, counts)
        if record:
            _record(result)
        return result


def _default_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    return item.text


def _record(result: BudgetResult) -> None:
    try:
        instruments.observe(c.BUDGET_TOKENS_KEPT, result.tokens_kept)
        if result.cut:
            instruments.add(c.BUDGET_DOCUMENTS_CUT, len(result.cut))
    except Exception:  # noqa: BLE001 - telemetry must never fail the caller
        pass


# -- tokenizers --------------------------------------------------------------------
# Each resolves to (encode(text) -> ids, prefix(text, k) -> the text of its first k
# tokens, name). The prefix is cut from the original text (offsets, or bytes for
# byte-level BPE), so a truncated document keeps its own spelling and spacing.
def _resolve_tokenizer(tokenizer: Any):
    if tokenizer is None:
        return None, None, "approx"
    if isinstance(tokenizer, str):
        if not tokenizer.strip():
            raise ConfigurationError("tokenizer must be None, a folder, an encoding name "
                                     "or a tokenizer object")
        path = os.path.expanduser(tokenizer)
        if os.path.isdir(path):
            return _hf_folder(path)
        return _tiktoken_by_name(tokenizer)
    encode = getattr(tokenizer, "encode", None)
    if not callable(encode):
        raise ConfigurationError(
            f"tokenizer {type(tokenizer).__name__} has no encode(); pass a folder, a "
            "tiktoken encoding name or a tokenizer object")
    name = str(getattr(tokenizer, "name", None) or getattr(tokenizer, "name_or_path", None)
               or type(tokenizer).__name__)
    if _is_hf_tokenizer(tokenizer):
        return (*_hf_functions(tokenizer), name)
    if _is_tiktoken(tokenizer):
        return (*_tiktoken_functions(tokenizer), name)
    decode = getattr(tokenizer, "decode", None)
    prefix = (lambda text, k: decode(encode(text)[:k])) if callable(decode) else None
    return encode, prefix, name


def _is_hf_tokenizer(obj: Any) -> bool:
    return any(cls.__name__ == "PreTrainedTokenizerBase" for cls in type(obj).__mro__)


def _is_tiktoken(obj: Any) -> bool:
    return type(obj).__module__.startswith("tiktoken")


def _hf_functions(tokenizer):
    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    def prefix(text: str, k: int) -> str:
        if getattr(tokenizer, "is_fast", False):
            offsets = tokenizer(text, add_special_tokens=False,
                                return_offsets_mapping=True)["offset_mapping"]
            return text if k >= len(offsets) else text[:offsets[k - 1][1]]
        return tokenizer.decode(encode(text)[:k])

    return encode, prefix


def _tiktoken_functions(encoding):
    def encode(text: str) -> list[int]:
        return encoding.encode(text, disallowed_special=())

    def prefix(text: str, k: int) -> str:
        # byte-level BPE: the first k tokens are a byte prefix of the UTF-8 text;
        # drop a character cut in half rather than show U+FFFD
        return encoding.decode_bytes(encode(text)[:k]).decode("utf-8", "ignore")

    return encode, prefix


def _hf_folder(path: str):
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"no tokenizer could be loaded from {path}: {exc}") from exc
    return (*_hf_functions(loaded), os.path.basename(path.rstrip("/")))


def tiktoken_cache_path(encoding: str) -> str | None:
    """Where tiktoken keeps ``encoding``'s file once downloaded (``None``: unknown name
    or caching disabled). Mirrors ``tiktoken.load.read_file_cached``."""
    import hashlib
    import inspect
    import re
    import tempfile

    try:
        import tiktoken_ext.openai_public as public
    except ImportError:
        return None
    match = re.search(rf'"(https://[^"]+/{re.escape(encoding)}\.tiktoken)"',
                      inspect.getsource(public))
    if match is None:
        return None
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR",
                               os.environ.get("DATA_GYM_CACHE_DIR",
                                              os.path.join(tempfile.gettempdir(),
                                                           "data-gym-cache")))
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(match.group(1).encode()).hexdigest())


def _tiktoken_by_name(name: str):
    try:
        import tiktoken
    except ImportError as exc:
        raise ConfigurationError(
            f"tokenizer {name!r} is neither a folder nor usable: tiktoken is not "
            "installed (pip install tiktoken), or pass a tokenizer folder") from exc
    path = tiktoken_cache_path(name)
    if path is None or not os.path.isfile(path):
        raise ConfigurationError(
            f"tokenizer {name!r}: no tokenizer folder of that name, and the tiktoken "
            f"encoding file is not in tiktoken's cache ({path or 'unknown encoding'}). "
            "tiktoken would download it on first use; this library never downloads at "
            "run time. Put the file there (TIKTOKEN_CACHE_DIR) or pass a tokenizer "
            "folder / object")
    try:
        encoding = tiktoken.get_encoding(name)
    except Exception as exc:  # noqa: BLE001 - a corrupt cached file would mean a download
        raise ConfigurationError(f"tiktoken encoding {name!r} did not load: {exc}") from exc
    return (*_tiktoken_functions(encoding), name)
