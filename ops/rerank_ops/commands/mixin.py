"""``rerank-ops mixin``: generate or check dashboards and Prometheus rules."""

from __future__ import annotations

from pathlib import Path

import click

from rerank_ops.mixin import MixinConfigError, differences, load_config, write

#: The repository root when running from a checkout (ops/rerank_ops/commands/ -> root).
CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


@click.command("mixin")
@click.option("--write", "mode", flag_value="write", help="Write the generated files.")
@click.option("--check", "mode", flag_value="check",
              help="Exit 1 when committed files differ from the generator.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Mixin config YAML. Defaults to the shipped config.yaml.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Repository root to write to or check. Defaults to this checkout.")
def mixin(mode: str | None, config_path: str | None, out_dir: str | None) -> None:
    """Generate dashboards/ and ops/prometheus/ from the metric contract and config.

    \b
    Example:
      rerank-ops mixin --write        # regenerate after changing contract or config
      rerank-ops mixin --check        # CI: exit 1 when committed files are stale
    """
    if mode is None:
        raise click.UsageError("choose --write or --check")
    try:
        config = load_config(config_path)
    except MixinConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    root = Path(out_dir) if out_dir else CHECKOUT_ROOT
    if mode == "write":
        for path in write(config, root):
            click.echo(f"wrote {path}")
        return
    stale = differences(config, root)
    if stale:
        for relative in stale:
            click.echo(f"stale: {relative}", err=True)
        click.echo("run `rerank-ops mixin --write` and commit the result", err=True)
        raise SystemExit(1)
    click.echo("dashboards and rules match the generator")
