"""Options shared by several ``rerank-ops`` commands, defined once.

Each is a decorator (``@seed_option``) so commands spell the same flag the same way,
with the same default and help text.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from .collections import data_dir


def _resolve_collection(_ctx, _param, value: str | None) -> Path | None:
    """A collection name (``cranfield``) means ``$RERANK_DATA_DIR/<name>``."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        return path
    named = data_dir() / value
    if named.is_dir():
        return named
    raise click.BadParameter(
        f"{value!r} is neither a folder nor a collection under {data_dir()} "
        "(set RERANK_DATA_DIR to the folder holding the shared collections)")


def parse_timestamp(_ctx, _param, value: str | None) -> float | None:
    """A click callback: unix seconds or ISO-8601 (naive means UTC) -> unix seconds."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use unix seconds or ISO-8601 (2025-05-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


seed_option = click.option(
    "--seed", type=int, default=13, show_default=True,
    help="Seed for sampling and splits (same inputs + seed = same result).")

progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="Progress bars on stderr. Default: only when stderr is a terminal.")

json_option = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the results as JSON to this file.")

def collection_option(fn=None, *, required: bool = False):
    """``--collection``: a BEIR folder or a shared collection's name. Use as
    ``@collection_option`` or ``@collection_option(required=True)``."""
    decorator = click.option(
        "--collection", "collection_path", default=None, required=required,
        callback=_resolve_collection,
        help="BEIR-format folder, or the name of a shared collection (cranfield, cisi, ...).")
    return decorator(fn) if fn is not None else decorator

model_option = click.option(
    "--model", default=None,
    help="Cross-encoder folder or hub name. Default: the embedded MiniLM bi-encoder.")

device_option = click.option(
    "--device", default=None, help="cpu, cuda, cuda:1 or mps. Default: automatic.")

dtype_option = click.option(
    "--dtype", default="auto", show_default=True,
    help="float32, bfloat16, float16 or auto (bf16 on CPUs with AMX/AVX512-BF16).")
