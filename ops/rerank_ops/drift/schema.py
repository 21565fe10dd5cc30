"""What the drift reader accepts from an event, and the stat test for each column.

The monitored columns are the library's own lists (``NUMERIC_FEATURES`` and
``CATEGORICAL_FEATURES`` of event schema v1). Every column gets an explicit stat
test and threshold: Evidently's automatic choice changes with sample size (K-S
p-values up to 1,000 rows, Wasserstein above), and a p-value flags negligible
differences once samples are large. The defaults are effect sizes, so the verdict
means the same for 500 rows or 500,000:

* numeric: normed Wasserstein distance (earth mover's distance divided by the
  reference standard deviation), drift when >= 0.1;
* categorical: Jensen-Shannon distance, drift when >= 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from rerank_plugins.telemetry.events import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    SCHEMA_VERSION,
)

#: Categorical value used for a missing (null) field, so "absent" is a category.
MISSING_CATEGORY = "(none)"


@dataclass(frozen=True)
class StatTest:
    """An Evidently stat test name and its drift threshold."""

    method: str
    threshold: float

    def describe(self) -> str:
        return f"{self.method}@{self.threshold:g}"


# Distances (wasserstein, jensenshannon, psi, kl_div, hellinger, ed) drift when the
# score is >= the threshold; p-value tests (ks, chisquare, z, ...) when it is below.
# Evidently's own per-column test decides, so both kinds work.
NUMERIC_METHODS = ("wasserstein", "ks", "psi", "jensenshannon", "kl_div", "hellinger",
                   "anderson", "cramer_von_mises", "mannw", "t_test", "ed", "es")
CATEGORICAL_METHODS = ("jensenshannon", "chisquare", "psi", "kl_div", "hellinger", "TVD",
                       "z", "fisher_exact", "g_test")

DEFAULT_NUMERIC_TEST = StatTest("wasserstein", 0.1)
DEFAULT_CATEGORICAL_TEST = StatTest("jensenshannon", 0.1)
#: Share of monitored columns that must drift for the run to report drift.
DEFAULT_DRIFT_SHARE = 0.3
#: Fewest valid events per side. Two samples of n rows from the same traffic differ
#: by a normed Wasserstein distance of roughly 1-2/sqrt(n) (skewed features such as
#: retrieval_score_std sit at the high end): about 0.1 at n=300, so below 200 the 0.1
#: threshold would mostly measure noise. Production windows should hold >= 1,000.
DEFAULT_MIN_ROWS = 200
#: Events sampled per side; enough to pin every distance well below the thresholds.
DEFAULT_MAX_ROWS = 50_000


@dataclass(frozen=True)
class DriftConfig:
    """Columns, their stat tests and the dataset-level drift share."""

    numeric: tuple[str, ...] = NUMERIC_FEATURES
    categorical: tuple[str, ...] = CATEGORICAL_FEATURES
    numeric_test: StatTest = DEFAULT_NUMERIC_TEST
    categorical_test: StatTest = DEFAULT_CATEGORICAL_TEST
    drift_share: float = DEFAULT_DRIFT_SHARE
    overrides: Mapping[str, StatTest] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def test_for(self, column: str) -> StatTest:
        """The stat test used for ``column``."""
        if column in self.overrides:
            return self.overrides[column]
        return self.numeric_test if column in self.numeric else self.categorical_test

    def without(self, excluded: Iterable[str]) -> DriftConfig:
        """This config minus ``excluded`` columns (unknown names raise ``ValueError``)."""
        excluded = set(excluded)
        unknown = excluded - set(self.columns)
        if unknown:
            raise ValueError(f"unknown feature(s) {sorted(unknown)}; monitored features are "
                             f"{', '.join(self.columns)}")
        return replace(self, numeric=tuple(c for c in self.numeric if c not in excluded),
                       categorical=tuple(c for c in self.categorical if c not in excluded))


class RowError(ValueError):
    """One decoded line is not a usable schema-v1 event."""


class OtherSchema(Exception):  # noqa: N818 - a signal, not a failure
    """The event is well-formed but of another schema version."""

    def __init__(self, version: object) -> None:
        super().__init__(str(version))
        self.version = version


def extract(row: object, numeric: tuple[str, ...], categorical: tuple[str, ...]):
    """Return (numeric values, categorical values) of one event, or raise.

    Raises:
        OtherSchema: ``schema_version`` is not this reader's version.
        RowError: not an object, a monitored field missing, or of the wrong type.
    """
    if not isinstance(row, dict):
        raise RowError("not a JSON object")
    version = row.get("schema_version")
    if version != SCHEMA_VERSION:
        raise OtherSchema(version)
    numbers = []
    for name in numeric:
        value = row.get(name, _MISSING)
        if value is _MISSING:
            raise RowError(f"missing field {name}")
        if value is None:
            numbers.append(math.nan)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.append(float(value))
        else:
            raise RowError(f"{name} is not a number")
    labels = []
    for name in categorical:
        value = row.get(name, _MISSING)
        if value is _MISSING:
            raise RowError(f"missing field {name}")
        if value is None or value == "":
            labels.append(MISSING_CATEGORY)
        elif isinstance(value, str):
            labels.append(value)
        else:
            raise RowError(f"{name} is not a string")
    return numbers, labels


_MISSING = object()
