"""OpenVINO backend: the same Hugging Face encoder, compiled for the CPU.

The torch module a scorer has already loaded is converted once with
``openvino.convert_model`` (dynamic batch and sequence dimensions, so the scorers'
token-budget batches and the engine's request merging are unchanged), written as
OpenVINO IR under ``<cache dir>/openvino/<key>/`` and compiled for the CPU at the
precisions the scorer needs (``bf16`` for the fast path on CPUs with native bf16,
``f32`` for the exact path). The key holds the model id, a digest of every weight,
the input names and the OpenVINO version, so a new revision or a new OpenVINO
converts again instead of loading a stale graph. OpenVINO's own compiled-blob cache
lives in the same folder.

Only the ``openvino`` runtime package is used (never ``optimum-intel``, which pins
older transformers). Install it with ``pip install 'rerank-plugins[openvino]'``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..device import hardware_class
from ..errors import ConfigurationError

logger = logging.getLogger("rerank_plugins.scoring")

BACKENDS = ("auto", "torch", "openvino")
#: Precision names of OpenVINO's ``INFERENCE_PRECISION_HINT`` per scorer dtype.
PRECISION_HINTS = {"bfloat16": "bf16", "float32": "f32"}
CACHE_ENV = "RERANK_PLUGINS_CACHE_DIR"
INSTALL_HINT = "pip install 'rerank-plugins[openvino]'"
#: Bumped whenever the conversion itself changes, so old cached graphs are not reused.
CACHE_FORMAT = 2


#: Every live compiled encoder, released before interpreter shutdown (see below).
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    # OpenVINO's CPU thread pool must be torn down while the interpreter is still
    # intact; left to module teardown it can abort the process on exit
    for encoder in list(_LIVE):
        encoder.release()


class BackendUnavailable(Exception):
    """OpenVINO cannot serve this model (missing package, failed conversion)."""


def openvino_version() -> str | None:
    """The installed OpenVINO runtime version, or ``None`` when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


def default_cache_dir() -> Path:
    """``$RERANK_PLUGINS_CACHE_DIR``, else ``~/.cache/rerank-plugins``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rerank-plugins")


def choose_backend(requested: str, device: str, *, quantize: str | None = None,
                   available: bool | None = None) -> str:
    """Pick ``"torch"`` or ``"openvino"`` for a scorer.

    ``auto``: OpenVINO when it is installed, the device is the CPU and no torch-only
    option (``quantize``) is set; torch otherwise (GPUs stay on torch). An explicit
    ``openvino`` on a non-CPU device or with ``quantize`` is a configuration error.
    """
    if requested not in BACKENDS:
        raise ConfigurationError(f"backend must be one of {BACKENDS}, got {requested!r}")
    installed = openvino_version() is not None if available is None else available
    if requested == "torch":
        return "torch"
    if requested == "openvino":
        if device != "cpu":
            raise ConfigurationError(
                f"backend='openvino' runs on the CPU; device={device!r} stays on torch "
                "(use backend='auto' or 'torch')")
        if quantize:
            raise ConfigurationError(
                "quantize='int8' is a torch option; use backend='torch' with it")
        if not installed:
            raise ConfigurationError(f"backend='openvino' needs OpenVINO: {INSTALL_HINT}")
        return "openvino"
    if device == "cpu" and not quantize and not installed:
        logger.info("rerank_plugins: OpenVINO is not installed; using the torch backend "
                    "(%s for the compiled CPU backend)", INSTALL_HINT)
    return "openvino" if installed and device == "cpu" and not quantize else "torch"


def default_streams(flags: frozenset[str], dtype: str) -> int:
    """OpenVINO streams for a scorer's fast passes when the caller does not choose.

    2 for bf16 passes on a CPU with AVX512-BF16 and no AMX, 1 everywhere else.
    Measured with ``benchmarks/openvino_streams.py`` (a real ``Reranker``, top_n 5,
    the harness's trained head, rounds interleaved): on a 2-core AMD EPYC (Zen 4)
    8 callers got 1.03-1.05x the requests per second of one stream in each of two
    runs (threads and asyncio tasks), a single call took 0.96x and 1.03x as long; on a
    2-core Xeon with AMX a wash (single call 0.99, 8 callers 1.03), so one stream and
    no second compiled model there. fp32 passes were not measured on two streams.
    """
    return 2 if dtype == "bfloat16" and hardware_class(flags) == "avx512_bf16" else 1


def weights_digest(module) -> str:
    """SHA-256 over every parameter and buffer (names, shapes, all values)."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-60:] or "model"


def _effective_precision(compiled, dtype: str) -> str:
    """The scorer dtype OpenVINO really computes in for a ``dtype`` request."""
    try:
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    except Exception:  # noqa: BLE001 - an older runtime without the property
        return dtype
    if "bf16" in hint or "bfloat16" in hint:
        return "bfloat16"
    if "f32" in hint or "float32" in hint:
        return "float32"
    return dtype


def settle_dtype(compiled: CompiledEncoder, dtype: str, model_id: str) -> str:
    """``dtype``, or the precision OpenVINO actually runs it at, with one warning
    when the two differ (so ``describe()``, the cache namespace and the exact re-scoring
    tell the truth: a bf16 request on an AVX2-only CPU is computed in fp32)."""
    actual = compiled.effective.get(dtype, dtype)
    if actual != dtype:
        logger.warning("%s: dtype=%r asked for, but this CPU has no native %s; OpenVINO "
                       "computes in %s, and the scorer reports and caches it as such",
                       model_id, dtype, dtype, actual)
    return actual


class CompiledEncoder:
    """One converted encoder, compiled at one or more precisions.

    Args:
        module: The torch module (fp32, eval mode) whose ``forward`` takes the
            ``input_names`` as int64 ``(batch, sequence)`` tensors.
        kind: What it is, part of the cache key (``"cross-encoder"``, ``"bi-encoder"``).
        model_id: Readable model name, part of the folder name.
        input_names: Model inputs, in order (e.g. ``input_ids``, ``attention_mask``).
        precisions: Scorer dtypes to compile (``"bfloat16"``, ``"float32"``).
        output: Name of the output to return (first output when absent).
        cache_dir: Root of the on-disk cache; ``None`` uses :func:`default_cache_dir`.
        threads: CPU threads per inference; ``None`` lets OpenVINO decide.
        streams: Per scorer dtype, how many OpenVINO streams to compile it with.
            Absent or 1: the LATENCY hint (one stream using every thread, what ships).
            2 or more: the THROUGHPUT hint with that many streams, the CPU's threads
            split between them; :meth:`run_many` then keeps every stream busy with
            its own batch, so passes overlap (a single :meth:`run` gets one stream's
            threads only).

    Raises:
        BackendUnavailable: OpenVINO is missing or the conversion failed.
    """

    def __init__(self, module, *, kind: str, model_id: str, input_names: Sequence[str],
                 precisions: Sequence[str], output: str | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None,
                 streams: Mapping[str, int] | None = None) -> None:
        streams = dict(streams or {})
        if any(int(n) < 1 for n in streams.values()):
            raise ConfigurationError(f"OpenVINO streams must be >= 1, got {streams}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(f"openvino is not installed ({INSTALL_HINT})") from exc
        self._ov = ov
        self.version = openvino_version() or "unknown"
        self.input_names = list(input_names)
        key_source = json.dumps({"kind": kind, "model": model_id, "inputs": self.input_names,
                                 "weights": weights_digest(module), "openvino": self.version,
                                 "output": output, "format": CACHE_FORMAT}, sort_keys=True)
        self.key = hashlib.sha256(key_source.encode()).hexdigest()[:20]
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.folder = root / "openvino" / f"{kind}-{_safe(model_id)}-{self.key}"
        self.converted = False  # True when this load converted instead of reading the cache
        model = self._load_or_convert(module, key_source)
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(self.folder / "compiled")})
        self._compiled = {}
        self._pools: dict[str, queue.SimpleQueue] = {}
        #: streams per compiled dtype, and a pool of async queues for the streamed ones
        self.streams: dict[str, int] = {}
        self._queues: dict[str, queue.SimpleQueue] = {}
        #: the precision each requested dtype really runs at: a CPU without native
        #: bf16 (no AMX, no AVX512-BF16) runs a bf16 hint in fp32
        self.effective: dict[str, str] = {}
        for dtype in dict.fromkeys(precisions):
            if dtype in self._compiled:  # an earlier request already runs at this one
                continue
            count = int(streams.get(dtype, 1))
            config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype],
                      "PERFORMANCE_HINT": "LATENCY" if count == 1 else "THROUGHPUT"}
            if count > 1:
                config["NUM_STREAMS"] = count
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            try:
                compiled = core.compile_model(model, "CPU", config)
            except Exception as exc:  # noqa: BLE001 - any compile failure means "use torch"
                raise BackendUnavailable(
                    f"OpenVINO could not compile {model_id} at {dtype}: "
                    f"{type(exc).__name__}: {exc}") from exc
            self._compiled[dtype] = compiled
            self._pools[dtype] = queue.SimpleQueue()
            self._queues[dtype] = queue.SimpleQueue()
            self.streams[dtype] = count
            self.effective[dtype] = actual = _effective_precision(compiled, dtype)
            if actual not in self._compiled:  # run(actual) finds the same model
                self._compiled[actual], self._pools[actual] = compiled, self._pools[dtype]
                self._queues[actual], self.streams[actual] = self._queues[dtype], count
        names = [o.get_any_name() for o in next(iter(self._compiled.values())).outputs]
        self.output_index = names.index(output) if output in names else 0
        _LIVE.add(self)

    def release(self) -> None:
        """Drop the compiled models and their infer requests (the encoder is unusable)."""
        for pool in (*self._pools.values(), *self._queues.values()):
            while True:
                try:
                    pool.get_nowait()
                except queue.Empty:
                    break
        self._compiled.clear()

    def _load_or_convert(self, module, key_source: str):
        ov = self._ov
        xml = self.folder / "model.xml"
        manifest = self.folder / "manifest.json"
        if xml.is_file() and manifest.is_file():
            try:
                if json.loads(manifest.read_text(encoding="utf-8")).get("key") == key_source:
                    return ov.Core().read_model(str(xml))
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning("rerank_plugins: unreadable OpenVINO cache at %s (%s); "
                               "converting again", self.folder, type(exc).__name__)
        try:
            model = self._convert(module)
        except Exception as exc:  # noqa: BLE001 - any conversion failure means "use torch"
            raise BackendUnavailable(
                f"OpenVINO could not convert the model: {type(exc).__name__}: {exc}") from exc
        self.converted = True
        self._write(model, key_source)
        return model

    def _convert(self, module):
        import torch

        ov = self._ov
        example = {name: torch.ones((2, 8), dtype=torch.int64) for name in self.input_names}
        if "token_type_ids" in example:
            example["token_type_ids"] = torch.zeros((2, 8), dtype=torch.int64)
        if "attention_mask" in example:
            # a padded row, so tracing keeps the mask (an all-ones mask may be dropped)
            example["attention_mask"][1, 5:] = 0
        shapes = [(name, [-1, -1], ov.Type.i64) for name in self.input_names]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shape-dependent branches
            return ov.convert_model(module, example_input=example, input=shapes)

    def _write(self, model, key_source: str) -> None:
        """Write the IR next to the final folder, then rename (no half-written cache)."""
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder.parent))
            self._ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
            (staging / "manifest.json").write_text(
                json.dumps({"key": key_source}), encoding="utf-8")
            if self.folder.exists():
                shutil.rmtree(self.folder, ignore_errors=True)
            os.replace(staging, self.folder)
        except OSError as exc:  # a read-only cache costs a conversion per load, nothing else
            logger.warning("rerank_plugins: could not write the OpenVINO cache at %s (%s)",
                           self.folder, exc)

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self._compiled)

    def run(self, inputs: dict[str, np.ndarray], dtype: str) -> np.ndarray:
        """One inference at ``dtype``; returns the chosen output as float32."""
        pool = self._pools[dtype]
        try:
            request = pool.get_nowait()
        except queue.Empty:  # one infer request per concurrent caller, reused afterwards
            request = self._compiled[dtype].create_infer_request()
        try:
            request.infer({name: inputs[name] for name in self.input_names})
            return np.array(request.get_output_tensor(self.output_index).data,
                            dtype=np.float32)
        finally:
            pool.put(request)

    def run_many(self, batches: Sequence[dict[str, np.ndarray]], dtype: str
                 ) -> list[np.ndarray]:
        """Every batch at ``dtype``, in order; on a streamed precision the batches
        run concurrently, one per stream (otherwise one after another)."""
        count = self.streams.get(dtype, 1)
        if count == 1 or len(batches) < 2:
            return [self.run(batch, dtype) for batch in batches]
        pool = self._queues[dtype]
        try:
            jobs = pool.get_nowait()
        except queue.Empty:  # one async queue per concurrent caller, reused afterwards
            jobs = self._ov.AsyncInferQueue(self._compiled[dtype], count)
        results: list[np.ndarray | None] = [None] * len(batches)
        index = self.output_index

        def done(request, slot: int) -> None:  # runs on OpenVINO's thread: copy out
            results[slot] = np.array(request.get_output_tensor(index).data,
                                     dtype=np.float32)

        jobs.set_callback(done)
        try:
            for slot, batch in enumerate(batches):
                jobs.start_async({name: batch[name] for name in self.input_names}, slot)
            jobs.wait_all()
        except BaseException:
            # a failed request keeps its error and would raise again on the next
            # call: let the running ones finish, then drop this queue, unpooled
            try:
                jobs.wait_all()
            except Exception:  # noqa: BLE001 - the first error is the one raised
                pass
            raise
        pool.put(jobs)
        missing = [slot for slot, out in enumerate(results) if out is None]
        if missing:  # a failed request leaves its slot empty: never hand back a gap
            raise RuntimeError(f"OpenVINO returned no output for batches {missing}")
        return results  # type: ignore[return-value]


def compile_or_fallback(build, *, requested: str, model_id: str,
                        errors: tuple[type[BaseException], ...] = (BackendUnavailable,)):
    """``build()`` -> a :class:`CompiledEncoder`, or ``None`` after one warning when
    ``backend="auto"`` must fall back to torch; an explicit ``backend="openvino"`` that
    cannot be built raises ``ConfigurationError``. Shared by both local scorers."""
    from ..errors import ConfigurationError

    try:
        compiled = build()
    except errors as exc:
        if requested == "openvino":
            raise ConfigurationError(f"backend='openvino' failed: {exc}") from exc
        logger.warning("rerank_plugins: OpenVINO backend unavailable for %s (%s); "
                       "using torch", model_id, exc)
        return None
    logger.info("rerank_plugins: %s on OpenVINO %s (%s), cache %s", model_id,
                compiled.version, "converted" if compiled.converted else "loaded from cache",
                compiled.folder)
    return compiled
