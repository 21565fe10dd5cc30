"""Device and dtype selection: cuda > mps > cpu; fp16/bf16 on GPUs, bf16 on CPUs
with native bf16 matrix instructions (AMX or AVX512-BF16), else fp32.

The choice is a pure function of what the machine reports, so it is unit-tested
with fake capability probes; ``resolve_device``/``resolve_dtype`` read the real ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import ConfigurationError

_ALIASES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
}


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers, as seen by the selection logic."""

    cuda: bool = False
    cuda_bf16: bool = False
    mps: bool = False
    cpu_flags: frozenset[str] = frozenset()


def cpu_has_fast_bf16(flags: frozenset[str]) -> bool:
    """True when the CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16)."""
    return "amx_bf16" in flags or "avx512_bf16" in flags


def hardware_class(flags: frozenset[str]) -> str:
    """The CPU class the speed defaults are measured per: ``amx`` (AMX bf16 tiles),
    ``avx512_bf16`` (bf16 dot products, no AMX) or ``other``."""
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "other"


def choose_device(caps: Capabilities, requested: str | None = None) -> str:
    """Pick the device: an explicit request wins, else cuda > mps > cpu."""
    if requested:
        requested = requested.strip().lower()
        if requested.startswith("cuda") and not caps.cuda:
            raise ConfigurationError(
                f"device={requested!r} was requested but CUDA is not available; "
                "use device=None for automatic selection or install a CUDA build of torch"
            )
        if requested == "mps" and not caps.mps:
            raise ConfigurationError("device='mps' was requested but MPS is not available")
        return requested
    if caps.cuda:
        return "cuda"
    if caps.mps:
        return "mps"
    return "cpu"


def normalize_dtype(name: str) -> str:
    try:
        return _ALIASES[name.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"dtype={name!r} is not supported; use one of 'auto', 'float32', 'bfloat16', "
            "'float16'"
        ) from None


def choose_dtype(caps: Capabilities, device: str, requested: str | None = "auto") -> str:
    """Pick the compute dtype for ``device``.

    GPU: bf16 when the GPU supports it, else fp16. CPU: bf16 when the CPU has AMX or
    AVX512-BF16, else fp32 (emulated bf16 is slower than fp32). MPS: fp16.
    """
    if requested and requested != "auto":
        dtype = normalize_dtype(requested)
        if device == "cpu" and dtype == "float16":
            raise ConfigurationError(
                "dtype='float16' on CPU is slow and inaccurate; use 'bfloat16' or 'float32'"
            )
        return dtype
    if device.startswith("cuda"):
        return "bfloat16" if caps.cuda_bf16 else "float16"
    if device == "mps":
        return "float16"
    return "bfloat16" if cpu_has_fast_bf16(caps.cpu_flags) else "float32"


@functools.lru_cache(maxsize=1)
def read_cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def probe_capabilities() -> Capabilities:
    """Read the real machine."""
    import torch

    cuda = bool(torch.cuda.is_available())
    cuda_bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(cuda=cuda, cuda_bf16=cuda_bf16, mps=mps, cpu_flags=read_cpu_flags())


def resolve_device_dtype(
    device: str | None = None, dtype: str | None = "auto"
) -> tuple[str, str]:
    """Device and dtype for this machine, honouring explicit overrides."""
    caps = probe_capabilities()
    chosen_device = choose_device(caps, device)
    return chosen_device, choose_dtype(caps, chosen_device, dtype)
