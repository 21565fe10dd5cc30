"""Local cross-encoder scorer (sentence-transformers ``CrossEncoder`` weights).

We load with sentence-transformers (so every CrossEncoder folder and hub name works)
and then drive the underlying Hugging Face model ourselves: pairs are tokenized once,
sorted by length and packed into token-budget batches, run under
``torch.inference_mode`` in the chosen dtype.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence

from ..device import resolve_device_dtype
from ..errors import ConfigurationError
from .base import ScoreOutput, ScoreRequest
from .default_model import DEFAULT_CROSS_ENCODER, is_local_folder, parameters_fingerprint
from .tokens import EncodedPair, PairEncoder, pad_rows, token_budget_batches

PASSAGE_MODES = ("first", "max", "mean")
QUANTIZE_MODES = (None, "int8")


class CrossEncoderScorer:
    """Scores (query, document) pairs with a cross-encoder.

    Args:
        model_name_or_path: Hub name or local folder. Defaults to
            ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (needs hub access or a local cache).
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``"auto"`` picks bf16/fp16 on GPU, bf16 on CPUs with AMX or AVX512-BF16,
            else fp32. Defaults to ``"auto"``.
        max_length: Tokens per pair; defaults to the model's own limit (capped at 512).
        max_batch_tokens: Padded tokens per forward pass. Defaults to 8192.
        max_batch_size: Pairs per forward pass. Defaults to 128.
        passage_mode: ``"first"`` scores the first window of long documents; ``"max"`` or
            ``"mean"`` slide a window over up to ``max_passages`` windows.
        max_passages: Windows per document in max/mean mode. Defaults to 4.
        stride: Overlap in tokens between windows. Defaults to 32.
        revision: Hub revision to load.
        trust_remote_code: Allow model code from the hub. Defaults to False.
        quantize: ``"int8"`` swaps every ``nn.Linear`` for a dynamically quantized one
            (CPU only; weights int8, activations quantized per batch). Check agreement
            on your data before using it. Defaults to ``None`` (off).
        attn_implementation: Passed to Hugging Face; ``"sdpa"`` uses PyTorch's fused
            attention kernels. Defaults to ``"sdpa"``.
        exact_top: With a reduced-precision dtype or int8, re-score this many of each
            request's best candidates with an fp32 copy of the model, so the head of
            the ranking (what reaches the LLM) is decided at full precision. ``0``
            turns it off. Defaults to 8.

    Example::

        scorer = CrossEncoderScorer("/models/ms-marco-MiniLM-L-6-v2")
        [out] = scorer.score_many([ScoreRequest("what is a wing", ["an airfoil", "a cat"])])
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_CROSS_ENCODER,
        *,
        device: str | None = None,
        dtype: str | None = "auto",
        max_length: int | None = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 128,
        passage_mode: str = "first",
        max_passages: int = 4,
        stride: int = 32,
        revision: str | None = None,
        trust_remote_code: bool = False,
        quantize: str | None = None,
        attn_implementation: str | None = "sdpa",
        exact_top: int = 8,
    ) -> None:
        if passage_mode not in PASSAGE_MODES:
            raise ConfigurationError(f"passage_mode must be one of {PASSAGE_MODES}")
        if max_batch_tokens < 16 or max_batch_size < 1:
            raise ConfigurationError("max_batch_tokens must be >= 16 and max_batch_size >= 1")
        if quantize not in QUANTIZE_MODES:
            raise ConfigurationError(f"quantize must be one of {QUANTIZE_MODES}")
        import torch
        from sentence_transformers import CrossEncoder

        self._torch = torch
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        if quantize and self.device != "cpu":
            raise ConfigurationError("quantize='int8' is a CPU path; use dtype on GPUs")
        if quantize:
            self.dtype = "float32"  # int8 Linear layers take fp32 activations
        self.quantize = quantize
        model_kwargs = {"attn_implementation": attn_implementation} if attn_implementation \
            else None
        local = is_local_folder(model_name_or_path)
        try:
            model = CrossEncoder(
                model_name_or_path,
                device=self.device,
                revision=revision,
                local_files_only=local or os.environ.get("HF_HUB_OFFLINE") == "1",
                trust_remote_code=trust_remote_code,
                model_kwargs=model_kwargs,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"could not load cross-encoder {model_name_or_path!r}: {exc}. Pass a local "
                "folder, or make sure the Hugging Face hub is reachable (or the model is "
                "in the local cache)"
            ) from exc
        self._st_model = model
        self._hf = model[0].auto_model
        self._hf.eval()
        self.exact_top = max(0, int(exact_top)) if (self.dtype != "float32" or quantize) else 0
        self._exact_model = None
        if self.exact_top:
            # the fp32 model for the head of each ranking: int8 quantizes a copy and
            # leaves self._hf in fp32; a reduced dtype gets an fp32 copy of the weights
            # taken before the cast (no second load from disk or hub)
            self._exact_model = self._hf if quantize else copy.deepcopy(self._hf).float()
        if self.dtype != "float32":
            self._hf.to(getattr(torch, self.dtype))
        self._model = self._hf
        if quantize == "int8":
            self._model = torch.ao.quantization.quantize_dynamic(
                self._hf, {torch.nn.Linear}, dtype=torch.qint8)
        self.tokenizer = model.tokenizer
        model_max = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        self.max_length = int(max_length or min(model_max, 512))
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch_size = int(max_batch_size)
        self.passage_mode = passage_mode
        passages = 1 if passage_mode == "first" else max_passages
        self._encoder = PairEncoder(self.tokenizer, self.max_length, max_passages=passages,
                                    stride=stride)
        self.num_labels = int(getattr(self._hf.config, "num_labels", 1))
        self._model_id = model_name_or_path if not local else os.path.basename(
            os.path.normpath(model_name_or_path)) or model_name_or_path
        self._revision = (revision or "") + ("@" if revision else "") + parameters_fingerprint(
            self._hf)
        self.config = self._hf.config
        self._accepts_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", ["token_type_ids"])
        self._pad_id = self.tokenizer.pad_token_id or 0

    # -- protocol -----------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def activation(self) -> str:
        return "sigmoid"

    @property
    def cache_namespace(self) -> str:
        return (f"ce|{self._model_id}|{self._revision}|len={self.max_length}|"
                f"mode={self.passage_mode}|dtype={self.dtype}|q={self.quantize or '-'}|"
                f"exact={self.exact_top}")

    def describe(self) -> dict[str, str]:
        return {"model": self._model_id, "revision": self._revision, "device": self.device,
                "dtype": self.dtype + ("+int8" if self.quantize else ""),
                "kind": "cross-encoder"}

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        """Score every request in one length-sorted, token-budgeted run of the model.

        Each output's ``extra["token_lengths"]`` lists the real token count of every
        window it scored (what :func:`encoder_flops` needs).
        """
        pairs: list[EncodedPair] = []
        per_request = []
        for request_index, request in enumerate(requests):
            encoded, windows, truncated = self._encoder.encode(
                request.query, request.texts, request_index)
            pairs.extend(encoded)
            per_request.append((windows, truncated, [len(p.input_ids) for p in encoded]))
        started = time.perf_counter()
        raw = self._forward(pairs, self._model)
        if self.exact_top:
            self._refine_heads(pairs, raw, per_request)
        elapsed = time.perf_counter() - started
        total_pairs = max(1, len(pairs))
        outputs: list[ScoreOutput] = []
        cursor = 0
        for windows, truncated, lengths in per_request:
            scores: list[float] = []
            for count in windows:
                values = raw[cursor : cursor + count]
                cursor += count
                if self.passage_mode == "mean":
                    scores.append(float(sum(values) / len(values)))
                else:
                    scores.append(float(max(values)))
            share = sum(windows) / total_pairs
            outputs.append(ScoreOutput(scores, truncated, elapsed * share,
                                       extra={"token_lengths": lengths}))
        return outputs

    # -- internals ----------------------------------------------------------------
    def _refine_heads(self, pairs: Sequence[EncodedPair], raw: list[float],
                      per_request) -> None:
        """Re-score each request's ``exact_top`` best windows with the fp32 twin."""
        chosen: list[int] = []
        start = 0
        for windows, _, _ in per_request:
            count = sum(windows)
            span = range(start, start + count)
            chosen.extend(sorted(span, key=lambda i: raw[i], reverse=True)[:self.exact_top])
            start += count
        exact = self._forward([pairs[i] for i in chosen], self._exact_model)
        for index, value in zip(chosen, exact, strict=True):
            raw[index] = value

    def _forward(self, pairs: Sequence[EncodedPair], model) -> list[float]:
        torch = self._torch
        if not pairs:
            return []
        lengths = [len(p.input_ids) for p in pairs]
        raw: list[float] = [0.0] * len(pairs)
        batches = token_budget_batches(lengths, self.max_batch_tokens, self.max_batch_size)
        with torch.inference_mode():
            for batch in batches:
                ids, mask = pad_rows([pairs[i].input_ids for i in batch], self._pad_id)
                inputs = {"input_ids": torch.from_numpy(ids).to(self.device),
                          "attention_mask": torch.from_numpy(mask).to(self.device)}
                if self._accepts_token_types and pairs[batch[0]].token_type_ids is not None:
                    types, _ = pad_rows([pairs[i].token_type_ids for i in batch], 0)
                    inputs["token_type_ids"] = torch.from_numpy(types).to(self.device)
                logits = model(**inputs).logits.float()
                if self.num_labels == 1:
                    values = logits[:, 0]
                else:  # two-class heads: log-odds of the "relevant" class
                    values = logits[:, -1] - logits[:, 0]
                for row, value in zip(batch, values.cpu().tolist(), strict=True):
                    raw[row] = value
        return raw


def encoder_flops(config, lengths: Sequence[int]) -> int:
    """Multiply-add FLOPs (2 per MAC) of a BERT-style cross-encoder forward pass.

    Counts the matrix products, which are where the time goes: per layer the Q/K/V
    and output projections (``4 h^2`` MACs per token), the feed-forward block
    (``2 h i``), and attention scores plus weighted values (``2 L h`` per token); then
    the pooler and classification head on the first token. Embedding lookups,
    layer norms, softmax and GELU are left out (a few percent).

    Args:
        config: A Hugging Face config with ``hidden_size``, ``intermediate_size`` and
            ``num_hidden_layers``.
        lengths: Real (unpadded) token counts of the sequences.

    Returns:
        Total FLOPs for the given sequences.
    """
    hidden = int(config.hidden_size)
    inner = int(config.intermediate_size)
    layers = int(config.num_hidden_layers)
    labels = int(getattr(config, "num_labels", 1) or 1)
    total = 0
    for length in lengths:
        projections = length * (4 * hidden * hidden + 2 * hidden * inner)
        per_layer = projections + 2 * length * length * hidden
        total += layers * per_layer + hidden * hidden + hidden * labels
    return 2 * total


def save_cross_encoder_from_bundled(path: str, *, seed: int = 0) -> str:
    """Write a CrossEncoder folder built from the embedded MiniLM weights.

    The result has exactly the architecture and cost of ms-marco-MiniLM-L-6-v2, but
    its classification head is freshly initialised (seeded): use it for speed and
    plumbing, not for relevance. Returns ``path``.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from .default_model import bundled_model_path

    torch.manual_seed(seed)
    model = CrossEncoder(bundled_model_path(), num_labels=1, local_files_only=True,
                         max_length=512)
    model.save_pretrained(path)
    return path
