"""Local cross-encoder scorer (sentence-transformers ``CrossEncoder`` weights).

We load with sentence-transformers (so every CrossEncoder folder and hub name works)
and then drive the model ourselves: pairs are tokenized once, sorted by length and
packed into token-budget batches, run by one of two backends: OpenVINO (the model
compiled for the CPU, chosen automatically when installed) or torch (GPUs, int8,
and the fallback) under ``torch.inference_mode`` in the chosen dtype.

With a reduced-precision dtype the ranking head is made exact where it matters:
the bf16-vs-fp32 score error is measured once at load and only candidates whose
order it could flip are re-scored in fp32 (:mod:`.precision`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..device import read_cpu_flags, resolve_device_dtype
from ..errors import ConfigurationError
from .base import Identified, ScoreOutput, ScoreRequest
from .default_model import DEFAULT_CROSS_ENCODER, is_local_folder, parameters_fingerprint
from .openvino_backend import (
    BackendUnavailable,
    CompiledEncoder,
    choose_backend,
    compile_or_fallback,
    default_streams,
    settle_dtype,
)
from .precision import DEFAULT_BAND_SCALE, DEFAULT_EXACT_HEAD, calibrate_error, near_boundary
from .tokens import (
    COMPILED_WIDTH_MULTIPLE,
    EncodedPair,
    PairEncoder,
    batch_budget,
    check_batch_budget,
    pad_rows,
    spread_batches,
    token_budget_batches,
)

logger = logging.getLogger("rerank_plugins.scoring")

PASSAGE_MODES = ("first", "max", "mean")
QUANTIZE_MODES = (None, "int8")


class CrossEncoderScorer(Identified):
    """Scores (query, document) pairs with a cross-encoder.

    Args:
        model_name_or_path: Hub name or local folder. Defaults to
            ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (needs hub access or a local cache).
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``"auto"`` picks bf16/fp16 on GPU, bf16 on CPUs with AMX or AVX512-BF16,
            else fp32. Defaults to ``"auto"``.
        max_length: Tokens per pair; defaults to the model's own limit (capped at 512).
        max_batch_tokens: Padded tokens per forward pass. ``None`` (default): on a
            CPU 2048 for bf16 passes and 1024 for fp32 ones (the re-score, or every
            pass without bf16), 8192 on a GPU (:func:`~.tokens.default_batch_budget`;
            a CPU is faster with passes that fit its caches).
        max_batch_size: Pairs per forward pass. ``None`` (default): 8 on a CPU, 128
            on a GPU.
        passage_mode: ``"first"`` scores the first window of long documents; ``"max"`` or
            ``"mean"`` slide a window over up to ``max_passages`` windows.
        max_passages: Windows per document in max/mean mode. Defaults to 4.
        stride: Overlap in tokens between windows. Defaults to 32.
        revision: Hub revision to load.
        trust_remote_code: Allow model code from the hub. Defaults to False.
        quantize: ``"int8"`` swaps every ``nn.Linear`` for a dynamically quantized one
            (torch backend, CPU only; weights int8, activations quantized per batch).
            Check agreement on your data before using it. Defaults to ``None`` (off).
        attn_implementation: Passed to Hugging Face; ``"sdpa"`` uses PyTorch's fused
            attention kernels (torch backend). Defaults to ``"sdpa"``.
        exact_top: ``None`` (default) re-scores in fp32 exactly the candidates whose
            place in the top ``exact_head`` the measured reduced-precision error could
            change (none at fp32). An integer overrides that: re-score this many of
            each request's best candidates in fp32 (``0`` turns re-scoring off).
        exact_head: How many leading ranks the adaptive re-scoring keeps in fp32
            order. Defaults to 10; a request whose ``head`` is smaller (the
            reranker's ``top_n`` when it cuts in model order) keeps only that many.
        exact_band_scale: Safety factor on the error measured at load; the band
            around each score is ``exact_band_scale * error``, and grows to any
            larger error a re-score measures (``describe()["observed_error"]``).
            Defaults to 2.0.
        backend: ``"auto"`` (default) uses OpenVINO when it is installed, the device
            is the CPU and ``quantize`` is off, else torch; ``"torch"`` or
            ``"openvino"`` force one (an explicit ``"openvino"`` that cannot load is
            an error; ``"auto"`` logs why and uses torch).
        compile_cache_dir: Where the OpenVINO backend keeps converted models
            (keyed by model, weights digest and OpenVINO version). Defaults to
            ``$RERANK_PLUGINS_CACHE_DIR`` or ``~/.cache/rerank-plugins``.
        openvino_streams: OpenVINO streams for the fast (reduced-precision) passes.
            1: one stream with every CPU thread (the LATENCY hint). 2 or more: the
            THROUGHPUT hint, the threads split between the streams and a call's
            batches run side by side, one per stream (a call with fewer batches than
            streams has its largest batch split). The fp32 re-score always runs on
            one stream. ``None`` (default): what was measured fastest for the CPU's
            class (:func:`~.openvino_backend.default_streams`: 2 on AVX512-BF16
            without AMX, else 1). Check yours with
            ``benchmarks/openvino_streams.py``.

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
        max_batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        passage_mode: str = "first",
        max_passages: int = 4,
        stride: int = 32,
        revision: str | None = None,
        trust_remote_code: bool = False,
        quantize: str | None = None,
        attn_implementation: str | None = "sdpa",
        exact_top: int | None = None,
        exact_head: int = DEFAULT_EXACT_HEAD,
        exact_band_scale: float = DEFAULT_BAND_SCALE,
        backend: str = "auto",
        compile_cache_dir: str | os.PathLike | None = None,
        openvino_streams: int | None = None,
    ) -> None:
        if passage_mode not in PASSAGE_MODES:
            raise ConfigurationError(f"passage_mode must be one of {PASSAGE_MODES}")
        check_batch_budget(max_batch_tokens, max_batch_size)
        if quantize not in QUANTIZE_MODES:
            raise ConfigurationError(f"quantize must be one of {QUANTIZE_MODES}")
        if exact_top is not None and (isinstance(exact_top, bool) or int(exact_top) < 0):
            raise ConfigurationError(f"exact_top must be None or >= 0, got {exact_top!r}")
        if int(exact_head) < 1 or not float(exact_band_scale) > 0:
            raise ConfigurationError("exact_head must be >= 1 and exact_band_scale > 0")
        if openvino_streams is not None and (
                isinstance(openvino_streams, bool) or not isinstance(openvino_streams, int)
                or openvino_streams < 1):
            raise ConfigurationError(
                f"openvino_streams must be None or an integer >= 1, got {openvino_streams!r}")
        import torch
        from sentence_transformers import CrossEncoder

        self._torch = torch
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        if quantize and self.device != "cpu":
            raise ConfigurationError("quantize='int8' is a CPU path; use dtype on GPUs")
        self.backend = choose_backend(backend, self.device, quantize=quantize)
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
        self.tokenizer = model.tokenizer
        self._model_id = model_name_or_path if not local else os.path.basename(
            os.path.normpath(model_name_or_path)) or model_name_or_path
        self._revision = (revision or "") + ("@" if revision else "") + parameters_fingerprint(
            self._hf)
        self.config = self._hf.config
        self.num_labels = int(getattr(self._hf.config, "num_labels", 1))
        self._accepts_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", ["token_type_ids"])
        self._pad_id = self.tokenizer.pad_token_id or 0
        reduced = self.dtype != "float32" or bool(quantize)
        self._compiled: CompiledEncoder | None = None
        self._exact_model = None
        if self.backend == "openvino":
            if openvino_streams is None:
                openvino_streams = default_streams(read_cpu_flags(), self.dtype)
            self._compiled = self._compile(backend, compile_cache_dir, reduced,
                                           openvino_streams)
        if self._compiled is None:
            self._prepare_torch(quantize, reduced)
        else:  # the compiled graph holds its own weights; free the torch copy
            self._st_model = self._hf = None
            self.dtype = settle_dtype(self._compiled, self.dtype, self._model_id)
            reduced = self.dtype != "float32"
        # fixed head (an explicit exact_top) or adaptive band; nothing to do at fp32
        self.exact_top = int(exact_top) if (exact_top is not None and reduced) else 0
        self.exact_adaptive = exact_top is None and reduced
        self.exact_head = int(exact_head)
        self.exact_band_scale = float(exact_band_scale)
        model_max = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        self.max_length = int(max_length or min(model_max, 512))
        # the fast passes and the fp32 re-score each take their precision's budget
        # (the same one when the caller sets it)
        self.max_batch_tokens, self.max_batch_size = batch_budget(
            self.device, max_batch_tokens, max_batch_size, self.dtype)
        self.exact_batch_tokens, self.exact_batch_size = batch_budget(
            self.device, max_batch_tokens, max_batch_size, "float32")
        self.passage_mode = passage_mode
        passages = 1 if passage_mode == "first" else max_passages
        self._encoder = PairEncoder(self.tokenizer, self.max_length, max_passages=passages,
                                    stride=stride)
        self.precision_error = 0.0
        if reduced:
            self.precision_error = calibrate_error(
                lambda p: self._score_pairs(p, exact=False),
                lambda p: self._score_pairs(p, exact=True))
        self.exact_band = self.exact_band_scale * self.precision_error
        #: the largest fast-path error a re-score saw beyond the band (0: none); the
        #: band then grows to it (``_widen``)
        self.observed_error = 0.0
        self._band_lock = threading.Lock()

    def _compile(self, requested: str, cache_dir, reduced: bool,
                 streams: int) -> CompiledEncoder | None:
        """The OpenVINO model, or ``None`` (after one warning) when ``auto`` falls back."""
        names = ["input_ids", "attention_mask"] + (
            ["token_type_ids"] if self._accepts_token_types else [])
        precisions = [self.dtype] + (["float32"] if reduced else [])
        compiled = compile_or_fallback(
            lambda: CompiledEncoder(
                self._hf.float(), kind="cross-encoder", model_id=self._model_id,
                input_names=names, precisions=precisions, output="logits",
                cache_dir=cache_dir, streams={self.dtype: streams}),
            requested=requested, model_id=self._model_id,
            errors=(BackendUnavailable, KeyError))
        if compiled is None:
            self.backend = "torch"
        return compiled

    def _prepare_torch(self, quantize: str | None, reduced: bool) -> None:
        torch = self._torch
        if reduced:
            # the fp32 model for re-scoring: int8 quantizes a copy and leaves self._hf
            # in fp32; a reduced dtype gets an fp32 copy of the weights taken before
            # the cast (no second load from disk or hub)
            self._exact_model = self._hf if quantize else copy.deepcopy(self._hf).float()
        if self.dtype != "float32":
            self._hf.to(getattr(torch, self.dtype))
        self._model = self._hf
        if quantize == "int8":
            self._model = torch.ao.quantization.quantize_dynamic(
                self._hf, {torch.nn.Linear}, dtype=torch.qint8)

    # -- protocol -----------------------------------------------------------------
    @property
    def activation(self) -> str:
        return "sigmoid"

    @property
    def exact_mode(self) -> str:
        """``adaptive``, ``top<N>`` or ``off``: how the ranking head is made exact."""
        if self.exact_adaptive:
            return "adaptive"
        return f"top{self.exact_top}" if self.exact_top else "off"

    @property
    def cache_namespace(self) -> str:
        head = f":h{self.exact_head}" if self.exact_adaptive else ""
        return (f"ce|{self._model_id}|{self._revision}|len={self.max_length}|"
                f"mode={self.passage_mode}|dtype={self.dtype}|q={self.quantize or '-'}|"
                f"be={self.backend}|exact={self.exact_mode}{head}")

    def describe(self) -> dict[str, str]:
        exact = self.exact_mode
        if self.exact_adaptive:
            exact += f" (top {self.exact_head}, band {self.exact_band:.2e})"
        info = {"model": self._model_id, "revision": self._revision, "device": self.device,
                "dtype": self.dtype + ("+int8" if self.quantize else ""),
                "kind": "cross-encoder", "backend": self.backend,
                "precision_error": f"{self.precision_error:.2e}", "exact": exact}
        if self.observed_error:  # a re-score saw an error beyond the load's band
            info["observed_error"] = f"{self.observed_error:.2e}"
        streams = self._compiled.streams.get(self.dtype, 1) if self._compiled else 1
        if streams > 1:
            info["openvino_streams"] = str(streams)
        return info

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        """Score every request in one length-sorted, token-budgeted run of the model.

        Each output's ``extra["token_lengths"]`` lists the real token count of every
        window it scored (what :func:`encoder_flops` needs) and ``extra["exact"]``
        how many of its texts were re-scored in fp32.
        """
        pairs: list[EncodedPair] = []
        per_request = []
        for request_index, request in enumerate(requests):
            encoded, windows, truncated = self._encoder.encode(
                request.query, request.texts, request_index)
            pairs.extend(encoded)
            per_request.append((windows, truncated, [len(p.input_ids) for p in encoded]))
        started = time.perf_counter()
        raw = self._forward(pairs, exact=False)
        all_scores = self._combine(raw, per_request)
        heads = [self.exact_head if r.head is None else max(1, min(int(r.head),
                                                                     self.exact_head))
                 for r in requests]
        rescored = self._make_exact(pairs, raw, per_request, all_scores, heads)
        elapsed = time.perf_counter() - started
        total_pairs = max(1, len(pairs))
        outputs: list[ScoreOutput] = []
        for (windows, truncated, lengths), scores, exact in zip(
                per_request, all_scores, rescored, strict=True):
            share = sum(windows) / total_pairs
            outputs.append(ScoreOutput(scores, truncated, elapsed * share,
                                       extra={"token_lengths": lengths, "exact": exact}))
        return outputs

    # -- internals ----------------------------------------------------------------
    def _combine(self, raw: list[float], per_request) -> list[list[float]]:
        """Per-text scores from per-window scores (first/max: max; mean: mean)."""
        combined = []
        cursor = 0
        for windows, _, _ in per_request:
            scores: list[float] = []
            for count in windows:
                values = raw[cursor: cursor + count]
                cursor += count
                if self.passage_mode == "mean":
                    scores.append(float(sum(values) / len(values)))
                else:
                    scores.append(float(max(values)))
            combined.append(scores)
        return combined

    def _make_exact(self, pairs: Sequence[EncodedPair], raw: list[float], per_request,
                    all_scores: list[list[float]], heads: Sequence[int]) -> list[int]:
        """Re-score in fp32 the texts that need it (the adaptive rule keeps each
        request's ``heads`` leading ranks exact); returns the count per request.

        The choice always reads the fast scores. Each re-score also measures the
        fast path's real error; one beyond the band widens the band to it
        (:meth:`_widen`) and the choice is made again, so the texts the wider band
        adds are re-scored too.
        """
        if not (self.exact_adaptive or self.exact_top):
            return [0] * len(per_request)
        # all_scores keeps the fast scores until the end; raw takes each window's fp32
        # value once (a text is re-scored at most once), after its error is read
        chosen: list[set[int]] = [set() for _ in per_request]
        while True:
            new_windows: list[int] = []
            start = 0
            for (windows, _, _), scores, head, taken in zip(per_request, all_scores, heads,
                                                            chosen, strict=True):
                if self.exact_adaptive:
                    texts = near_boundary(scores, self.exact_band, head)
                else:
                    texts = sorted(range(len(scores)), key=lambda i: scores[i],
                                   reverse=True)[:self.exact_top]
                offsets = np.cumsum([0, *windows])
                for text in texts:
                    if text not in taken:
                        taken.add(text)
                        new_windows.extend(range(start + offsets[text],
                                                 start + offsets[text + 1]))
                start += sum(windows)
            if not new_windows:
                break
            exact = self._forward([pairs[i] for i in new_windows], exact=True)
            observed = 0.0
            for index, value in zip(new_windows, exact, strict=True):
                observed = max(observed, abs(value - raw[index]))
                raw[index] = value
            if not (self.exact_adaptive and self._widen(observed)):
                break
        if any(chosen):
            all_scores[:] = self._combine(raw, per_request)
        return [len(taken) for taken in chosen]

    def _widen(self, observed: float) -> bool:
        """Take a fast-path error a re-score measured; ``True`` when it lay beyond the
        band, which then grows to it: the band never sits below an error really seen
        (never shrinks; the load's ``precision_error`` stays as measured)."""
        if not (math.isfinite(observed) and observed > self.exact_band):
            return False
        with self._band_lock:
            if observed <= self.exact_band:  # another call widened it meanwhile
                return True
            level = logging.WARNING if not self.observed_error else logging.INFO
            logger.log(level, "%s: a %s score was %.2e from fp32, beyond the exact band "
                       "of %.2e (%.1f x the %.2e measured at load); the band widens to it",
                       self._model_id, self.dtype, observed, self.exact_band,
                       self.exact_band_scale, self.precision_error)
            self.observed_error = self.exact_band = observed
        return True

    def _score_pairs(self, pairs: list[tuple[str, str]], *, exact: bool) -> list[float]:
        """Raw first-window scores of (query, text) pairs (the calibration path)."""
        encoded: list[EncodedPair] = []
        for index, (query, text) in enumerate(pairs):
            rows, _, _ = self._encoder.encode(query, [text], index)
            encoded.append(rows[0])
        return self._forward(encoded, exact=exact)

    def _forward(self, pairs: Sequence[EncodedPair], *, exact: bool) -> list[float]:
        if not pairs:
            return []
        lengths = [len(p.input_ids) for p in pairs]
        raw: list[float] = [0.0] * len(pairs)
        if exact:  # fp32 passes have a budget of their own
            budget = (self.exact_batch_tokens, self.exact_batch_size)
        else:
            budget = (self.max_batch_tokens, self.max_batch_size)
        batches = token_budget_batches(lengths, *budget)
        dtype = "float32" if exact else self.dtype
        streams = self._compiled.streams.get(dtype, 1) if self._compiled is not None else 1
        batches = spread_batches(batches, streams)
        # the compiled backend reuses kernels per shape: round widths to a few values
        shape = {"multiple": COMPILED_WIDTH_MULTIPLE, "limit": self.max_length} \
            if self._compiled is not None else {}
        padded = []
        for batch in batches:
            ids, mask = pad_rows([pairs[i].input_ids for i in batch], self._pad_id, **shape)
            inputs = {"input_ids": ids, "attention_mask": mask}
            if self._accepts_token_types:
                if pairs[batch[0]].token_type_ids is not None:
                    inputs["token_type_ids"], _ = pad_rows(
                        [pairs[i].token_type_ids for i in batch], 0, **shape)
                elif self._compiled is not None:
                    inputs["token_type_ids"] = np.zeros_like(ids)
            padded.append(inputs)
        if self._compiled is not None:
            all_logits = self._compiled.run_many(padded, dtype)
        else:
            all_logits = [self._logits(inputs, exact) for inputs in padded]
        for batch, logits in zip(batches, all_logits, strict=True):
            if self.num_labels == 1:
                values = logits[:, 0]
            else:  # two-class heads: log-odds of the "relevant" class
                values = logits[:, -1] - logits[:, 0]
            for row, value in zip(batch, values.tolist(), strict=True):
                raw[row] = float(value)
        return raw

    def _logits(self, inputs: dict[str, np.ndarray], exact: bool) -> np.ndarray:
        """``(batch, labels)`` float32 logits from the torch model."""
        torch = self._torch
        model = self._exact_model if exact else self._model
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            return model(**tensors).logits.float().cpu().numpy()


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
