"""`rerank-ops drift`: has the traffic the reranker sees shifted? Built for cron."""

from __future__ import annotations

from pathlib import Path

import click

from ..drift import DriftInputError
from ..drift.schema import (
    CATEGORICAL_METHODS,
    DEFAULT_CATEGORICAL_TEST,
    DEFAULT_DRIFT_SHARE,
    DEFAULT_MAX_ROWS,
    DEFAULT_MIN_ROWS,
    DEFAULT_NUMERIC_TEST,
    NUMERIC_METHODS,
    DriftConfig,
    StatTest,
)
from ..options import parse_timestamp, progress_option, seed_option

EXIT_DRIFT = 3


_PATHS = click.Path(path_type=Path)
_DAYS = click.FloatRange(min=0, min_open=True)


@click.command("drift")
@click.option("--reference", multiple=True, type=_PATHS,
              help="Reference event log: a file or directory (repeatable).")
@click.option("--current", multiple=True, type=_PATHS,
              help="Current event log: a file or directory (repeatable).")
@click.option("--log-dir", type=_PATHS, default=None,
              help="Event log directory to cut into time windows by each event's ts.")
@click.option("--reference-days", type=_DAYS, default=7.0, show_default=True,
              help="With --log-dir: reference window length, just before the current one.")
@click.option("--current-days", type=_DAYS, default=1.0, show_default=True,
              help="With --log-dir: current window length, ending at --until.")
@click.option("--until", callback=parse_timestamp, default=None,
              help="With --log-dir: end of the current window (ISO-8601 or unix s). "
                   "Default: now.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write drift-report.html, drift-report.json and "
                                 "drift-summary.json here.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the metrics for node-exporter's textfile collector (*.prom, "
                   "atomic replace).")
@click.option("--pushgateway", "pushgateway_url", default=None,
              help="Push-add the metrics to this Pushgateway (http://host:9091).")
@click.option("--push-job", default="rerank_drift", show_default=True,
              help="Pushgateway job label.")
@click.option("--num-method", type=click.Choice(NUMERIC_METHODS),
              default=DEFAULT_NUMERIC_TEST.method, show_default=True,
              help="Evidently stat test for numeric features.")
@click.option("--num-threshold", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_NUMERIC_TEST.threshold, show_default=True,
              help="Drift threshold of --num-method (distance >= it, or p-value < it).")
@click.option("--cat-method", type=click.Choice(CATEGORICAL_METHODS),
              default=DEFAULT_CATEGORICAL_TEST.method, show_default=True,
              help="Evidently stat test for categorical features.")
@click.option("--cat-threshold", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_CATEGORICAL_TEST.threshold, show_default=True,
              help="Drift threshold of --cat-method.")
@click.option("--drift-share", type=click.FloatRange(0, 1, min_open=True),
              default=DEFAULT_DRIFT_SHARE, show_default=True,
              help="Report drift when at least this share of features drifted.")
@click.option("--exclude", multiple=True, metavar="FEATURE",
              help="Leave a feature out (repeatable), e.g. latency_total_ms on noisy hosts.")
@click.option("--min-rows", type=click.IntRange(min=2), default=DEFAULT_MIN_ROWS,
              show_default=True,
              help="Refuse to judge a side with fewer valid events.")
@click.option("--max-rows", type=click.IntRange(min=100), default=DEFAULT_MAX_ROWS,
              show_default=True,
              help="Sample each side down to this many events (seeded).")
@seed_option
@progress_option
@click.pass_context
def drift(ctx: click.Context, reference, current, log_dir, reference_days, current_days,
          until, out_dir, textfile, pushgateway_url, push_job, num_method, num_threshold,
          cat_method, cat_threshold, drift_share, exclude, min_rows, max_rows, seed,
          progress) -> None:
    """Compare current rerank traffic against a reference with Evidently.

    Reads the Reranker's event log (files, directories, or time windows over a log
    directory), tests every feature with an explicit stat test, writes HTML/JSON
    reports, prints a table and publishes metrics for Prometheus.

    Exit codes: 0 no drift, 3 drift, 1 error (missing/empty logs, schema mismatch,
    too few valid events), 2 usage.

    \b
    Examples:
      rerank-ops drift --log-dir /var/log/rerank --reference-days 7 --current-days 1 \\
          --out /var/lib/rerank/drift --textfile /var/lib/node_exporter/rerank_drift.prom
      rerank-ops drift --reference last-week/ --current today.jsonl --out report/
    """
    from ..drift.job import DriftInputs, run_drift

    if log_dir is not None and (reference or current):
        raise click.UsageError("use either --log-dir (time windows) or --reference/--current")
    if log_dir is None and not (reference and current):
        raise click.UsageError("give --reference and --current, or --log-dir")
    config = DriftConfig(numeric_test=StatTest(num_method, num_threshold),
                         categorical_test=StatTest(cat_method, cat_threshold),
                         drift_share=drift_share)
    try:
        config = config.without(exclude)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--exclude") from None
    inputs = DriftInputs(tuple(reference), tuple(current), log_dir, reference_days,
                         current_days, until)
    try:
        result, snapshot = run_drift(inputs, config, min_rows=min_rows, max_rows=max_rows,
                                     seed=seed, progress=progress)
    except DriftInputError as exc:
        raise click.ClickException(str(exc)) from None
    _deliver(result, snapshot, out_dir, textfile, pushgateway_url, push_job)
    ctx.exit(EXIT_DRIFT if result.detected else 0)


def _deliver(result, snapshot, out_dir, textfile, pushgateway_url, push_job) -> None:
    from ..drift.publish import build_registry, push, write_textfile
    from ..drift.report import summary_table, write_reports

    click.echo(summary_table(result))
    if out_dir is not None:
        try:
            for path in write_reports(out_dir, result, snapshot):
                click.echo(f"wrote {path}", err=True)
        except OSError as exc:
            raise click.ClickException(f"cannot write reports to {out_dir}: {exc}") from None
    if textfile is None and pushgateway_url is None:
        return
    registry = build_registry(result)
    if textfile is not None:
        try:
            write_textfile(textfile, registry)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot write {textfile}: {exc}") from None
    if pushgateway_url is not None:
        try:
            push(pushgateway_url, registry, job=push_job)
        except OSError as exc:  # URLError and HTTPError are OSErrors
            verdict = "drift" if result.detected else "no drift"
            raise click.ClickException(
                f"push to {pushgateway_url} failed ({exc}); the run itself completed "
                f"({verdict})") from None
