"""The ``rerank-ops`` command group. Each command lives in its own module under
``rerank_ops.commands`` and is imported only when invoked, so ``rerank-ops --help``
stays fast and a missing optional dependency only affects its own command.

Exit codes: 0 success (drift: no drift), 1 error, 2 usage, 3 drift detected / gate failed
(compare: a candidate is significantly worse than control).
"""

from __future__ import annotations

import importlib

import click

#: name -> "module:function" (module relative to rerank_ops.commands)
COMMANDS = {
    "demo": ("demo:demo", "Run the end-to-end quickstart: BM25 -> guarded rerank -> before/after."),
    "drift": ("drift:drift", "Evidently drift report over event logs; exit 3 on drift (cron)."),
    "eval": ("eval:eval_cmd", "Rerank a BEIR collection's first-stage run; report metric gains."),
    "calibrate": ("calibrate:calibrate", "Fit score calibration from labeled pairs."),
    "bench": ("bench:bench", "Latency and throughput of the reranker on this machine."),
    "doctor": ("doctor:doctor", "Check device, model, cache, log sink and metrics endpoint."),
    "runbooks": ("runbooks:runbooks", "List or show the on-call runbooks."),
    "mixin": ("mixin:mixin", "Generate dashboards and Prometheus rules from the metric contract."),
    "finetune": ("finetune:finetune_cmd", "Domain-adapt a cross-encoder from labeled pairs."),
    "swap": ("swap:swap", "Make a served app hot-swap its model (admin endpoint or SIGHUP)."),
    "compare": ("compare:compare_cmd",
                "Canary vs control from the event log + feedback; exit 3 when worse (gate)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, _help = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(f"rerank_ops.commands.{module_name}")
        except ModuleNotFoundError as exc:
            # a missing optional dependency of this one command, never of the others
            raise click.ClickException(
                f"'{name}' needs {exc.name}: pip install 'rerank-plugins[ops]'") from exc
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        # from the table, so `rerank-ops --help` imports no command module
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rerank-plugins")
def main() -> None:
    """Operate a rerank-plugins deployment.

    \b
    Example:
      rerank-ops demo
      rerank-ops drift --log-dir /var/log/rerank --reference-days 7 --current-days 1
    """
