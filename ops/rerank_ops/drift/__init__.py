"""Drift detection over the feature/score event log (the engine of ``rerank-ops drift``).

Modules, in the order a run uses them:

* :mod:`.logs` - which files and which rows: paths or time windows over a log
  directory, malformed lines skipped and counted, seeded sampling of large logs;
* :mod:`.schema` - the event schema the reader accepts, and the per-column stat tests;
* :mod:`.report` - the Evidently 0.7 report (explicit ``DataDefinition`` and stat test
  per column) and its summary;
* :mod:`.publish` - Prometheus textfile-collector file and Pushgateway push-add.

Errors the operator can act on are :class:`DriftInputError` (bad or too little
input: exit 1 from the CLI); usage mistakes are the CLI's business (exit 2).
"""

from __future__ import annotations


class DriftInputError(Exception):
    """The logs cannot be judged: missing, empty, wrong schema or too few valid rows."""


__all__ = ["DriftInputError"]
