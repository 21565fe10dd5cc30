"""Pair encoding with exact truncation counts, sliding windows and token-budget batches.

Documents are tokenized once without special tokens; each (query, document) pair is
then assembled by the tokenizer's own ``build_inputs_with_special_tokens`` so any
Hugging Face tokenizer (BERT, XLM-R, ...) gets its native pair format.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError

# Generous upper bound on characters per token: text beyond this cannot reach the
# model anyway, and cutting it first keeps a 1 MB document from costing a full
# tokenization.
CHARS_PER_TOKEN_CAP = 24


@dataclass
class EncodedPair:
    """One model input row: a (query, document window) pair as token ids."""

    request_index: int
    text_index: int
    input_ids: list[int]
    token_type_ids: list[int] | None


class PairEncoder:
    """Turns (query, texts) into model inputs; safe to share between threads."""

    def __init__(self, tokenizer, max_length: int, *, max_passages: int = 1, stride: int = 0):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.max_passages = max(1, int(max_passages))
        self.stride = max(0, int(stride))
        self._lock = threading.Lock()  # fast tokenizers are not re-entrant across threads

    def _cap_query(self, query: str) -> str:
        """Keep at most half the window for the query, so a document always fits."""
        max_query = max(1, self.max_length // 2)
        ids = self.tokenizer(query, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_query:
            return query
        return self.tokenizer.decode(ids[:max_query])

    def encode(self, query: str, texts: Sequence[str], request_index: int = 0):
        """Return (pairs, windows_per_text, truncated_count)."""
        if not texts:
            return [], [], 0
        char_cap = self.max_length * self.max_passages * CHARS_PER_TOKEN_CAP
        capped = [t if len(t) <= char_cap else t[:char_cap] for t in texts]
        with self._lock:
            query = self._cap_query(query)
            encoded = self.tokenizer(
                [query] * len(capped),
                capped,
                truncation="only_second",
                max_length=self.max_length,
                stride=self.stride if self.max_passages > 1 else 0,
                return_overflowing_tokens=True,
                padding=False,
            )
        mapping = encoded["overflow_to_sample_mapping"]
        type_ids = encoded.get("token_type_ids")
        pairs: list[EncodedPair] = []
        windows = [0] * len(texts)
        needed = [0] * len(texts)
        for row, text_index in enumerate(mapping):
            needed[text_index] += 1
            if windows[text_index] >= self.max_passages:
                continue
            windows[text_index] += 1
            pairs.append(EncodedPair(
                request_index, text_index, encoded["input_ids"][row],
                type_ids[row] if type_ids is not None else None))
        truncated = sum(
            1 for i in range(len(texts))
            if needed[i] > windows[i] or len(capped[i]) < len(texts[i])
        )
        return pairs, windows, truncated


#: Budget of one forward pass on a GPU: large batches keep its many cores busy.
GPU_BATCH_BUDGET = (8192, 128)
#: Budget of one reduced-precision (bf16/fp16/int8) forward pass on a CPU. Smaller
#: passes are faster there: their activations stay in the cores' caches. Measured by
#: ``benchmarks/batch_budget.py`` on a 2-core AMX Xeon (50 candidates of 80-250
#: words): OpenVINO bf16 358-366 ms per request at 8 pairs vs 416 ms at 8192 tokens /
#: 128 pairs; torch bf16 404 vs 518 ms.
CPU_BATCH_BUDGET = (2048, 8)
#: Budget of one fp32 pass on a CPU (the adaptive re-score, and every pass of a CPU
#: without bf16): its activations take twice the bytes, so half the tokens fit the
#: same caches. Measured on the AMX Xeon (OpenVINO, 2026-12-03): the re-score of a
#: request's best 7 candidates 157 ms at 1024 tokens vs 196 ms at 2048; whole
#: 50-candidate requests 1,024 vs 1,063 ms; the fp32 bi-encoder (256-token texts)
#: the same at both (939 ms).
CPU_FP32_BATCH_BUDGET = (1024, 8)
#: Sequence widths of the OpenVINO backend are rounded up to a multiple of this: a
#: shape it has run before reuses its compiled kernels, and a new width costs ~10%
#: on its first pass. Measured on the AMX Xeon (bf16, 50 candidates, 8 pairs per
#: pass): 334-373 ms per request unrounded, 314-318 ms at 16, 342-350 ms at 64;
#: fp32 unchanged (1,038-1,073 ms at 16 against 1,056-1,064 ms).
COMPILED_WIDTH_MULTIPLE = 16


def default_batch_budget(device: str, dtype: str = "bfloat16") -> tuple[int, int]:
    """``(max_batch_tokens, max_batch_size)`` of a ``dtype`` pass when the caller sets
    neither: one large budget on an accelerator, a cache-sized one per precision on a
    CPU."""
    if device != "cpu":
        return GPU_BATCH_BUDGET
    return CPU_FP32_BATCH_BUDGET if dtype == "float32" else CPU_BATCH_BUDGET


def check_batch_budget(max_batch_tokens: int | None, max_batch_size: int | None) -> None:
    """Refuse a budget no forward pass can use (``None`` means the device default)."""
    if (max_batch_tokens is not None and max_batch_tokens < 16) or (
            max_batch_size is not None and max_batch_size < 1):
        raise ConfigurationError("max_batch_tokens must be >= 16 and the pairs (texts) per "
                                 "pass (max_batch_size / batch_size) >= 1")


def batch_budget(device: str, max_batch_tokens: int | None, max_batch_size: int | None,
                 dtype: str = "bfloat16") -> tuple[int, int]:
    """The budget of a ``dtype`` pass: what the caller set, else the default of the
    device and precision."""
    tokens, size = default_batch_budget(device, dtype)
    return int(max_batch_tokens or tokens), int(max_batch_size or size)


def token_budget_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int
) -> list[list[int]]:
    """Group indices into padded batches of at most ``max_batch_tokens``.

    Longest first, so each batch pads to a similar length; a single sequence longer
    than the budget still forms a batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = 0
    for index in order:
        length = lengths[index]
        new_max = max(current_max, length)
        if current and (
            (len(current) + 1) * new_max > max_batch_tokens or len(current) >= max_batch_size
        ):
            batches.append(current)
            current, new_max = [], length
        current.append(index)
        current_max = new_max
    if current:
        batches.append(current)
    return batches


def spread_batches(batches: list[list[int]], parts: int) -> list[list[int]]:
    """At least ``parts`` batches where the rows allow: while there are fewer, the
    largest batch is cut in two (so every stream of a streamed model gets work).
    Row order inside each batch is kept; no row is lost or repeated. Enough batches
    already (every call of a one-stream model): the same list, untouched."""
    if len(batches) >= parts:
        return batches
    batches = [list(batch) for batch in batches]
    while len(batches) < parts:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]), default=None)
        if largest is None or len(batches[largest]) < 2:
            break
        batch = batches.pop(largest)
        half = (len(batch) + 1) // 2
        batches[largest:largest] = [batch[:half], batch[half:]]
    return batches


def pad_rows(rows: Sequence[Sequence[int]], pad_value: int = 0, *, multiple: int = 1,
             limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ragged id lists into an ``int64`` matrix plus its attention mask.

    One flat copy instead of one small tensor per row: the ids are chained into a
    single buffer and scattered through a boolean mask (row-major order matches the
    chained order), which keeps batch assembly far below a millisecond.

    Args:
        rows: Token id lists, one per sequence.
        pad_value: Id written after each row's end. Defaults to 0.
        multiple: Round the width up to a multiple of this (a compiled backend
            reuses kernels for shapes it has seen). Defaults to 1.
        limit: Never round past this width (the model's position limit); a row
            longer than ``limit`` still sets the width. Defaults to no limit.

    Returns:
        ``(ids, mask)``, both of shape ``(len(rows), width)`` where ``width`` is the
        longest row, rounded up as above; ``mask`` is 1 on real tokens and 0 on
        padding.
    """
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    if multiple > 1 and width:
        rounded = -(-width // multiple) * multiple
        width = max(width, min(rounded, limit)) if limit is not None else rounded
    mask = np.arange(width, dtype=np.int64)[None, :] < lengths[:, None]
    ids = np.full((len(rows), width), pad_value, dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                            count=int(lengths.sum()))
    return ids, mask.astype(np.int64)
