"""Which CPU runtime should run the cross-encoder: a side-by-side probe (issue #17).

Every candidate runtime gets the *same* token batches of the same model folder (the
harness's trained head by default): pairs of each request sorted by length and cut
into batches of ``--batch`` pairs, each padded to its own longest pair, the way our
token-budget batching shapes them. Per runtime it prints the p50 time of a 50-candidate
request (the model alone: tokenising is shared and excluded) and its agreement with the
PyTorch fp32 reference (Spearman per request, identical ordered top-5, the largest
absolute logit difference).

Runtimes (each skipped with the reason when its package is missing or conversion fails):

* ``torch-fp32``, ``torch-bf16`` (autocast): the peers' path.
* ``openvino-bf16``: what ships (``openvino.convert_model`` + bf16 inference precision);
  ``openvino-f32``: the same compiled model at f32 precision (what the adaptive re-score
  runs). No f16 row: on a CPU with AVX512-FP16 it ran slower than f32, and a f32 compile
  after a f16 one in the same cache folder returned f16 results.
* ``onnxruntime-fp32`` and ``onnxruntime-int8`` (dynamic int8 quantisation of the
  matmuls, the VNNI/AMX int8 kernels).
* ``ctranslate2-int8`` / ``-bf16``: the BERT encoder converted by ctranslate2, with our
  classification head applied to its pooled output in numpy.

ONNX Runtime and CTranslate2 are *not* project dependencies; install them beside
transformers for the probe only (``pip install onnxruntime onnx onnxscript
ctranslate2``, or into a ``--target`` folder on ``PYTHONPATH``); the probe prints the
transformers version before and after importing them.

    python benchmarks/backend_probe.py [--model FOLDER] [--queries 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (sets the offline environment first)
import numpy as np  # noqa: E402
from workload import DEFAULT_DATA, mixed_requests  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def top5(scores) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:5]]


def batches_of(tokenizer, request, batch: int, max_length: int) -> list[dict]:
    """The request's pairs, shortest first, in padded numpy batches (with ``order``)."""
    encoded = [tokenizer(request.query, text, truncation="only_second",
                         max_length=max_length) for text in request.texts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out = []
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        width = max(len(encoded[i]["input_ids"]) for i in chosen)
        arrays = {name: np.zeros((len(chosen), width), dtype=np.int64)
                  for name in INPUTS}
        for row, i in enumerate(chosen):
            for name in arrays:
                values = encoded[i][name]
                arrays[name][row, :len(values)] = values
        out.append({"order": chosen, **arrays})
    return out


class Runtime:
    name = "?"

    def __call__(self, batch: dict) -> np.ndarray:  # logits, one per row
        raise NotImplementedError


class TorchRuntime(Runtime):
    def __init__(self, model, bf16: bool):
        self.model, self.bf16 = model, bf16
        self.name = "torch-bf16" if bf16 else "torch-fp32"

    def __call__(self, batch):
        import torch

        inputs = {k: torch.from_numpy(batch[k]) for k in INPUTS}
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=self.bf16):
            return self.model(**inputs).logits.float().numpy()[:, 0]


class OpenVINORuntime(Runtime):
    """The backend that ships (``CompiledEncoder``: dynamic shapes, LATENCY hint, bf16
    inference precision), without the scorer's adaptive fp32 re-scoring."""

    def __init__(self, model, workdir: Path, dtype: str = "bfloat16"):
        from rerank_plugins.scoring.openvino_backend import PRECISION_HINTS, CompiledEncoder

        self.encoder = CompiledEncoder(model, kind="cross-encoder", model_id="probe",
                                       input_names=INPUTS, precisions=[dtype],
                                       output="logits", cache_dir=workdir)
        self.dtype = dtype
        actual = self.encoder.effective.get(dtype, dtype)
        if actual != dtype:  # e.g. f16 on a CPU without AVX512-FP16: not what was asked
            raise RuntimeError(f"this CPU runs a {dtype} hint as {actual}")
        self.name = f"openvino-{PRECISION_HINTS[dtype]}"

    def __call__(self, batch):
        return self.encoder.run({n: batch[n] for n in INPUTS}, self.dtype)[:, 0]


def export_onnx(model, example, path: Path) -> None:
    import torch

    inputs = tuple(torch.from_numpy(example[k]) for k in INPUTS)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(model, inputs, str(path), dynamo=False,
                      input_names=list(INPUTS),
                      output_names=["logits"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                    "token_type_ids": axes, "logits": {0: "batch"}})


class OnnxRuntime(Runtime):
    def __init__(self, path: Path, int8: bool, threads: int):
        import onnxruntime as ort

        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = path.with_name("model-int8.onnx")
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
            path = quantized
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.name = "onnxruntime-int8" if int8 else "onnxruntime-fp32"

    def __call__(self, batch):
        names = [i.name for i in self.session.get_inputs()]
        return self.session.run(None, {n: batch[n] for n in names})[0][:, 0]


class CTranslate2Runtime(Runtime):
    def __init__(self, model, tokenizer, workdir: Path, compute_type: str, threads: int):
        import ctranslate2
        from ctranslate2.converters import TransformersConverter

        bert_dir = workdir / "bert"
        if not (workdir / "ct2" / "model.bin").is_file():
            model.bert.save_pretrained(str(bert_dir))
            tokenizer.save_pretrained(str(bert_dir))
            TransformersConverter(str(bert_dir)).convert(str(workdir / "ct2"), force=True)
        self.encoder = ctranslate2.Encoder(str(workdir / "ct2"), device="cpu",
                                           compute_type=compute_type,
                                           intra_threads=threads)
        self.weight = model.classifier.weight.detach().float().numpy()
        self.bias = model.classifier.bias.detach().float().numpy()
        self.name = f"ctranslate2-{compute_type}"

    def __call__(self, batch):
        ids = [row[mask.astype(bool)].tolist() for row, mask in
               zip(batch["input_ids"], batch["attention_mask"], strict=True)]
        types = [row[mask.astype(bool)].tolist() for row, mask in
                 zip(batch["token_type_ids"], batch["attention_mask"], strict=True)]
        output = self.encoder.forward_batch(ids, token_type_ids=types)
        pooled = np.asarray(output.pooler_output, dtype=np.float32)
        return (pooled @ self.weight.T + self.bias)[:, 0]


def score(runtime: Runtime, request_batches: list[dict], size: int) -> np.ndarray:
    scores = np.zeros(size, dtype=np.float32)
    for batch in request_batches:
        scores[batch["order"]] = runtime(batch)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="cross-encoder folder "
                        "(default: the harness's trained head, built on first use)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--queries", type=int, default=3, help="per collection")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers_before = transformers.__version__
    if args.model is None:
        import heads

        args.model = Path(heads.trained_head(args.data)[0])
    requests = mixed_requests(args.data, ("cranfield", "cisi"), args.queries)
    if not requests:
        print(f"no collections under {args.data} (set RERANK_DATA_DIR)", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForSequenceClassification.from_pretrained(str(args.model)).eval()
    threads = torch.get_num_threads()
    prepared = [batches_of(tokenizer, r, args.batch, args.max_length) for r in requests]
    example = prepared[0][0]
    workdir = Path(tempfile.mkdtemp(prefix="rerank-backend-probe-"))

    builders = {
        "torch-fp32": lambda: TorchRuntime(model, bf16=False),
        "torch-bf16": lambda: TorchRuntime(model, bf16=True),
        "openvino-bf16": lambda: OpenVINORuntime(model, workdir),
        "openvino-f32": lambda: OpenVINORuntime(model, workdir, "float32"),
        "onnxruntime-fp32": lambda: (export_onnx(model, example, workdir / "model.onnx"),
                                     OnnxRuntime(workdir / "model.onnx", False, threads))[1],
        "onnxruntime-int8": lambda: OnnxRuntime(workdir / "model.onnx", True, threads),
        "ctranslate2-int8": lambda: CTranslate2Runtime(model, tokenizer, workdir, "int8",
                                                       threads),
        "ctranslate2-bfloat16": lambda: CTranslate2Runtime(model, tokenizer, workdir,
                                                           "bfloat16", threads),
    }
    runtimes: list[Runtime] = []
    skipped: dict[str, str] = {}
    for name, build in builders.items():
        try:
            runtimes.append(build())
        except Exception as error:  # a missing package or a failed conversion
            skipped[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            print(f"skip {name}: {skipped[name]}", file=sys.stderr)

    sizes = [len(r.texts) for r in requests]
    for runtime in runtimes:  # warm-up: first calls compile and allocate
        score(runtime, prepared[0], sizes[0])
    times: dict[str, list[float]] = {r.name: [] for r in runtimes}
    outputs: dict[str, list[np.ndarray]] = {r.name: [None] * len(requests) for r in runtimes}
    for _ in range(args.rounds):
        for index, batches in enumerate(prepared):
            for runtime in runtimes:  # interleaved, so load drifts hit all alike
                started = time.perf_counter()
                outputs[runtime.name][index] = score(runtime, batches, sizes[index])
                times[runtime.name].append(time.perf_counter() - started)

    reference = outputs["torch-fp32"]
    rows = {}
    for runtime in runtimes:
        rhos = [spearman(a, b) for a, b in zip(reference, outputs[runtime.name], strict=True)]
        same = [top5(a) == top5(b) for a, b in zip(reference, outputs[runtime.name],
                                                   strict=True)]
        error = max(float(np.max(np.abs(a - b))) for a, b in
                    zip(reference, outputs[runtime.name], strict=True))
        rows[runtime.name] = {"p50_ms": round(statistics.median(times[runtime.name]) * 1e3, 1),
                              "max_abs_logit_error": float(f"{error:.3g}"),
                              "spearman_min": round(min(rhos), 4),
                              "top5_identical": round(sum(same) / len(same), 3)}
    base = rows["torch-fp32"]["p50_ms"]
    hardware = machine.hardware()
    report = {"hardware": hardware, "versions": {
        **machine.versions(), "transformers_before_probe_imports": transformers_before,
        "transformers_after": transformers.__version__},
        "settings": {"model": str(args.model), "requests": len(requests),
                     "candidates": sizes[0], "rounds": args.rounds, "batch": args.batch,
                     "max_length": args.max_length, "threads": threads},
        "runtimes": rows, "skipped": skipped}
    flags = " ".join(hardware.get("cpu_flags", []))
    print(f"{hardware.get('cpu')} | class {hardware.get('hardware_class')} | flags {flags} | "
          f"threads {threads} | transformers {transformers_before} -> "
          f"{transformers.__version__}")
    print(f"{'runtime':22} {'p50 ms':>8} {'vs fp32':>8} {'Spearman min':>13} {'top-5 same':>11}"
          f" {'max |err|':>10}")
    for name, row in rows.items():
        print(f"{name:22} {row['p50_ms']:8.1f} {base / row['p50_ms']:7.2f}x "
              f"{row['spearman_min']:13.4f} {row['top5_identical']:11.3f}"
              f" {row['max_abs_logit_error']:10.2e}")
    for name, reason in skipped.items():
        print(f"{name:22} skipped: {reason}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
