"""What the benchmark ran on: CPU model and flags, cores, versions, and the measured
matrix-multiply peak that achieved model FLOP/s are compared against.

Importing it also sets the benchmarks' environment defaults (offline hub, quiet
transformers, no tokenizer thread pools): import it before any model library."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the class rule is the library's own (it picks per-class defaults by it)
from rerank_plugins.device import hardware_class  # noqa: E402

#: CPU flags that decide the CPU fast paths (bf16 dot products, int8 dot products, AMX).
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                     "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("torch", "transformers", "sentence-transformers", "tokenizers",
            "llama-index-core", "langchain-core", "langchain-classic", "langchain-community",
            "redis", "numpy", "openvino", "onnxruntime", "ctranslate2")

#: Targets of issue #17 per hardware class: p50 ratio to each peer (at most),
#: throughput ratio with 8 callers (at least), model FLOP/s share of the bf16 peak.
TARGETS = {
    "amx": {"p50_ratio": 1 / 3, "throughput_ratio": 3.0, "fraction_of_bf16_peak": 0.30},
    "avx512_bf16": {"p50_ratio": 1 / 2, "throughput_ratio": 2.0, "fraction_of_bf16_peak": None},
    "other": {"p50_ratio": None, "throughput_ratio": None, "fraction_of_bf16_peak": None},
}
#: Targets that hold on every machine.
AGREEMENT_TARGETS = {"spearman_min": 0.99, "top5_identical_ordered": 0.95}


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware() -> dict:
    """CPU model, relevant flags, logical cores, torch threads, memory, GPU."""
    import torch

    from rerank_plugins.device import read_cpu_flags

    flags = read_cpu_flags()
    memory_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu_model(),
        "cpu_flags": [flag for flag in INTERESTING_FLAGS if flag in flags],
        "amx": any(flag.startswith("amx") for flag in flags),
        "hardware_class": hardware_class(flags),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "memory_gib": memory_gib,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def matmul_peak(dtype_name: str, *, size: int = 2048, seconds: float = 1.0) -> float:
    """Best observed FLOP/s of a square ``size`` matmul in ``dtype_name`` on this CPU.

    The best of several timed bursts, so a momentary stall on a shared machine does
    not lower the ceiling the model is compared against.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    flops = 2 * size**3
    with torch.inference_mode():
        for _ in range(2):
            torch.mm(a, b)
        best = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.mm(a, b)
            best = max(best, flops / (time.perf_counter() - started))
    return best
