"""`rerank-ops swap`: make a served app hot-swap a model (no restart, no failed request).

Talks to the hook of ``ops/deploy/example_app.py`` (copy it into your app): its
loopback admin endpoint (``--admin-url``), or SIGHUP to its process (``--pid``),
after which the app writes the outcome to its ``--swap-status-file``. Either way
the app calls ``reranker.swap_scorer(new, warmup=...)``: the new model is warmed up
off the request path and the switch is atomic.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from ..options import json_option


@click.command("swap")
@click.option("--admin-url", default=None,
              help="The app's admin endpoint, e.g. http://127.0.0.1:9470.")
@click.option("--pid", type=click.IntRange(min=1), default=None,
              help="Send SIGHUP to this process instead (it reads its --swap-model-file).")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="With --pid: the app's --swap-status-file, read for the outcome.")
@click.option("--arm", default="control", show_default=True,
              help="With --admin-url: the arm to swap ('control' or a variant's name).")
@click.option("--model", default=None,
              help="With --admin-url: model folder to serve. Default: the bundled model.")
@click.option("--timeout-s", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="How long to wait for the swap (load + warm-up).")
@json_option
def swap(admin_url, pid, status_file, arm, model, timeout_s, json_path) -> None:
    """Hot-swap the model an app serves, and report the outcome.

    Exit codes: 0 swapped, 1 the app refused or did not answer (the old model keeps
    serving), 2 usage.

    \b
    Examples:
      rerank-ops swap --admin-url http://127.0.0.1:9470 --model /models/ce-v2
      rerank-ops swap --admin-url http://127.0.0.1:9470 --arm candidate --model /models/ce-v1
      rerank-ops swap --pid 4242 --status-file /run/rerank/swap-status.json
    """
    if (admin_url is None) == (pid is None):
        raise click.UsageError("give exactly one of --admin-url or --pid")
    if pid is not None and (arm != "control" or model is not None):
        raise click.UsageError("with --pid the app reads arm and model from its "
                               "--swap-model-file; --arm/--model need --admin-url")
    if admin_url is not None:
        outcome = _over_http(admin_url, arm, model, timeout_s)
    else:
        outcome = _over_signal(pid, status_file, timeout_s)
    if json_path is not None:
        json_path.write_text(json.dumps(outcome, indent=2) + "\n")
    if outcome.get("ok"):
        click.echo(f"swapped: arm {outcome.get('arm')} serves "
                   f"{outcome.get('model') or 'the bundled model'} "
                   f"({outcome.get('model_id')}@{outcome.get('revision')}) after "
                   f"{outcome.get('seconds')} s")
        return
    raise click.ClickException(f"swap refused, the old model keeps serving: "
                               f"{outcome.get('error', outcome)}")


def _over_http(url: str, arm: str, model: str | None, timeout_s: float) -> dict:
    body = json.dumps({"arm": arm, "model": model}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/admin/swap", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return {"ok": False, "error": f"HTTP {exc.code} from {url}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"no answer from {url}: {exc}") from None


def _over_signal(pid: int, status_file: Path | None, timeout_s: float) -> dict:
    before = _read_status(status_file)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise click.ClickException(f"no process {pid}") from None
    except PermissionError:
        raise click.ClickException(f"not allowed to signal process {pid}") from None
    if status_file is None:
        click.echo(f"sent SIGHUP to {pid}; give --status-file to wait for the outcome",
                   err=True)
        return {"ok": True, "arm": "control", "model": "(from the app's --swap-model-file)",
                "model_id": "?", "revision": "?", "seconds": "?"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = _read_status(status_file)
        if current is not None and current != before:
            return current
        time.sleep(0.2)
    raise click.ClickException(f"process {pid} wrote no outcome to {status_file} within "
                               f"{timeout_s:g} s (is it started with --swap-status-file?)")


def _read_status(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
