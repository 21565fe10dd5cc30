"""Device and dtype selection (rerank_plugins.device) against fake machine probes.

``Capabilities`` is the value the real probe returns; building it by hand is how a
CPU-only test machine describes a CUDA or Apple machine it does not have.
"""

from __future__ import annotations

import pytest

from rerank_plugins.device import (
    Capabilities,
    choose_device,
    choose_dtype,
    cpu_has_fast_bf16,
    normalize_dtype,
    probe_capabilities,
    resolve_device_dtype,
)
from rerank_plugins.errors import ConfigurationError

CPU_PLAIN = Capabilities(cpu_flags=frozenset({"sse4_2", "avx2", "avx512f"}))
CPU_AVX512_BF16 = Capabilities(cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16"}))
CPU_AMX = Capabilities(cpu_flags=frozenset({"avx2", "amx_tile", "amx_bf16"}))
CUDA_AMPERE = Capabilities(cuda=True, cuda_bf16=True, mps=False)
CUDA_TURING = Capabilities(cuda=True, cuda_bf16=False)
APPLE = Capabilities(mps=True)
EVERYTHING = Capabilities(cuda=True, cuda_bf16=True, mps=True,
                          cpu_flags=frozenset({"amx_bf16"}))


@pytest.mark.parametrize(("caps", "expected"), [
    (EVERYTHING, "cuda"),
    (Capabilities(cuda=True, mps=True), "cuda"),
    (APPLE, "mps"),
    (CPU_AMX, "cpu"),
    (CPU_PLAIN, "cpu"),
    (Capabilities(), "cpu"),
])
def test_automatic_device_prefers_cuda_then_mps_then_cpu(caps, expected):
    assert choose_device(caps) == expected


@pytest.mark.parametrize(("caps", "requested", "expected"), [
    (EVERYTHING, "cpu", "cpu"),
    (EVERYTHING, "mps", "mps"),
    (EVERYTHING, "cuda:1", "cuda:1"),
    (CUDA_AMPERE, " CUDA ", "cuda"),
    (APPLE, "cpu", "cpu"),
])
def test_explicit_device_wins_over_automatic_choice(caps, requested, expected):
    assert choose_device(caps, requested) == expected


@pytest.mark.parametrize(("caps", "requested", "names"), [
    (CPU_PLAIN, "cuda", "CUDA is not available"),
    (APPLE, "cuda:0", "CUDA is not available"),
    (CPU_PLAIN, "mps", "MPS is not available"),
    (CUDA_AMPERE, "mps", "MPS is not available"),
])
def test_requesting_a_missing_device_is_a_configuration_error(caps, requested, names):
    with pytest.raises(ConfigurationError, match=names):
        choose_device(caps, requested)


def test_configuration_error_for_a_device_is_also_a_value_error():
    with pytest.raises(ValueError):
        choose_device(CPU_PLAIN, "cuda")


@pytest.mark.parametrize(("caps", "device", "expected"), [
    (CUDA_AMPERE, "cuda", "bfloat16"),
    (CUDA_AMPERE, "cuda:1", "bfloat16"),
    (CUDA_TURING, "cuda", "float16"),
    (APPLE, "mps", "float16"),
    (CPU_AMX, "cpu", "bfloat16"),
    (CPU_AVX512_BF16, "cpu", "bfloat16"),
    (CPU_PLAIN, "cpu", "float32"),
    (Capabilities(), "cpu", "float32"),
    # a GPU box whose CPU lacks bf16: the CPU choice follows the CPU, not the GPU
    (CUDA_AMPERE, "cpu", "float32"),
])
def test_automatic_dtype_follows_the_device(caps, device, expected):
    assert choose_dtype(caps, device) == expected
    assert choose_dtype(caps, device, "auto") == expected
    assert choose_dtype(caps, device, None) == expected
    assert choose_dtype(caps, device, "") == expected  # empty means "not set"


@pytest.mark.parametrize(("requested", "expected"), [
    ("fp32", "float32"), ("float32", "float32"), ("float", "float32"),
    ("bf16", "bfloat16"), ("BFloat16", "bfloat16"),
    ("fp16", "float16"), ("half", "float16"), (" float16 ", "float16"),
])
def test_dtype_aliases_normalize(requested, expected):
    assert normalize_dtype(requested) == expected


@pytest.mark.parametrize(("caps", "device", "requested", "expected"), [
    (CPU_AMX, "cpu", "float32", "float32"),  # override away from the automatic bf16
    (CPU_PLAIN, "cpu", "bf16", "bfloat16"),  # allowed even when emulated
    (CUDA_AMPERE, "cuda", "fp16", "float16"),
    (CUDA_TURING, "cuda", "fp32", "float32"),
    (APPLE, "mps", "float32", "float32"),
])
def test_explicit_dtype_overrides_automatic_choice(caps, device, requested, expected):
    assert choose_dtype(caps, device, requested) == expected


def test_float16_on_cpu_is_refused_with_alternatives():
    with pytest.raises(ConfigurationError, match="bfloat16.*float32"):
        choose_dtype(CPU_AMX, "cpu", "fp16")


@pytest.mark.parametrize("bad", ["int8", "float64", "bf", 16])
def test_unknown_dtype_names_the_supported_ones(bad):
    with pytest.raises(ConfigurationError, match="'auto', 'float32', 'bfloat16', 'float16'"):
        choose_dtype(CPU_PLAIN, "cpu", bad)


@pytest.mark.parametrize(("flags", "fast"), [
    ({"amx_bf16"}, True), ({"avx512_bf16"}, True), ({"amx_tile"}, False),
    ({"avx512f", "avx512bw"}, False), (set(), False),
])
def test_fast_bf16_needs_amx_or_avx512_bf16(flags, fast):
    assert cpu_has_fast_bf16(frozenset(flags)) is fast


def test_real_probe_picks_what_this_machine_can_run_fast():
    """The real probe against facts read here independently: the CPU flags straight
    from /proc/cpuinfo, CUDA and MPS from torch, and the documented rule (GPU first;
    on a CPU bf16 only with AMX-BF16 or AVX512-BF16, else fp32)."""
    import torch

    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        flag_lines = [line for line in fh if line.startswith("flags")]
    flags = set(flag_lines[0].split(":", 1)[1].split()) if flag_lines else set()
    caps = probe_capabilities()
    assert set(caps.cpu_flags) == flags
    assert caps.cuda is torch.cuda.is_available()
    device, dtype = resolve_device_dtype()
    if torch.cuda.is_available():
        assert device.startswith("cuda") and dtype in {"bfloat16", "float16"}
    elif torch.backends.mps.is_available():
        assert (device, dtype) == ("mps", "float16")
    else:
        fast_bf16 = bool(flags & {"amx_bf16", "avx512_bf16"})
        assert (device, dtype) == ("cpu", "bfloat16" if fast_bf16 else "float32"), flags
    # an explicit choice is honoured as given
    assert resolve_device_dtype("cpu", "float32") == ("cpu", "float32")
    assert resolve_device_dtype("cpu", "bf16") == ("cpu", "bfloat16")
