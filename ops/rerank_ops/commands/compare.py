"""`rerank-ops compare`: is the canary worse than control? A promotion gate for cron/CI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..compare import DEFAULT_GATE, GATE_METRICS, GROUP_FIELDS
from ..options import json_option, parse_timestamp

EXIT_WORSE = 3
DAY_S = 86_400.0


@click.command("compare")
@click.option("--log-dir", type=click.Path(exists=True, path_type=Path), required=True,
              help="The Reranker's event log: a directory of events-* parts, or one file.")
@click.option("--by", type=click.Choice(GROUP_FIELDS), default="variant", show_default=True,
              help="What an arm is: the rollout variant, or the model version.")
@click.option("--control", default=None,
              help="Control arm. Default: 'control' by variant; by model_version, the "
                   "version with the most served requests.")
@click.option("--since", callback=parse_timestamp, default=None,
              help="Only events at or after this time (ISO-8601 or unix s).")
@click.option("--until", callback=parse_timestamp, default=None,
              help="Only events before this time (ISO-8601 or unix s). Default: now.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Only the last DAYS days before --until (instead of --since).")
@click.option("--k", "k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Click-through@k: a click at a 0-based position < k counts.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True,
              help="Family-wise significance level (Bonferroni over tests).")
@click.option("--power", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.8, show_default=True,
              help="Power for the 'n/arm needed' sample sizes.")
@click.option("--gate", "gate", multiple=True, type=click.Choice(GATE_METRICS),
              default=DEFAULT_GATE, show_default=True,
              help="Metric whose significant worsening exits 3 (repeatable).")
@click.option("--min-requests", type=click.IntRange(min=1), default=100, show_default=True,
              help="Do not test a candidate with fewer request records.")
@json_option
@click.pass_context
def compare_cmd(ctx: click.Context, log_dir, by, control, since, until, days, k, alpha,
                power, gate, min_requests, json_path) -> None:
    """Compare rollout arms (canary vs control) from the event log and its feedback.

    Per arm: requests, fallback rate, latency p50/p95/p99, top-1 score, and from the
    feedback joined on request_id: click-through@k and MRR of clicked requests.
    Tests every candidate against control (z-test / Fisher for rates, Mann-Whitney
    for MRR and latency) and gives the sample size needed to detect the observed
    difference.

    Exit codes: 0 no candidate significantly worse, 3 a candidate is significantly
    worse on a gated metric (roll back), 1 error (no events, no control), 2 usage.

    \b
    Examples:
      rerank-ops compare --log-dir /var/log/rerank --days 1
      rerank-ops compare --log-dir /var/log/rerank --by model_version --json cmp.json
    """
    from rerank_plugins.telemetry.events import read_events

    from ..compare import CompareInputError, collect, compare, format_report

    if days is not None and since is not None:
        raise click.UsageError("use either --since or --days")
    if days is not None:
        until = until if until is not None else time.time()
        since = until - days * DAY_S
    events = read_events(log_dir, since=since, until=until, kind=None)
    try:
        report = compare(collect(events, by=by, k=k), control=control, alpha=alpha,
                         power=power, gate=gate, min_requests=min_requests)
    except CompareInputError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_report(report))
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write {json_path}: {exc}") from None
    ctx.exit(EXIT_WORSE if report.worse else 0)
