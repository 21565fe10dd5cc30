"""Compare rollout arms from the event log: is the candidate worse than control?

Input is the Reranker's event log (``rerank_plugins.telemetry.events``): request
records (``event="rerank"``) carry the arm (``variant``, ``model_version``) and
whether they were served; feedback records (``event="feedback"``) say which
result (``position``, 0-based) of which request (``request_id``) got a positive
``label`` (a click is 1.0). Feedback is joined to its request on ``request_id``.

Per arm: requests, fallback rate, latency p50/p95/p99, top-1 score distribution,
click-through@k (share of served requests with a positive feedback at a position
< k) and the MRR of clicked requests (mean 1/(first clicked position + 1)).

Each candidate is tested against control, two-sided, on the gated metrics:

* CTR@k and fallback rate: two-proportion z-test (Fisher's exact test when an
  expected cell count is below 5);
* MRR of clicked requests and latency: Mann-Whitney U.

The family of tests (gated metrics x candidates) is Bonferroni-corrected, so on
two equal arms the gate raises a false "worse" in at most ``alpha / 2`` of runs
(half the rejections of a two-sided test point the good way). For each test the
report also gives the per-arm sample size that would detect the observed
difference with the requested power at the corrected level.

Example::

    from rerank_ops.compare import collect, compare
    from rerank_plugins.telemetry.events import read_events

    arms = collect(read_events("/var/log/rerank", kind=None), by="variant", k=3)
    report = compare(arms, control="control")
    report.worse  # True: exit 3 in `rerank-ops compare`
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rerank_plugins.telemetry.contract import CONTROL_VARIANT
from rerank_plugins.telemetry.events import FEEDBACK_EVENT, REQUEST_EVENT

#: Fields an arm can be keyed by.
GROUP_FIELDS = ("variant", "model_version")
#: Metrics the gate can test; ``latency`` is reported but not gated by default
#: (a better model is often a slower one, and the latency SLO alerts guard it).
GATE_METRICS = ("ctr", "mrr", "fallback_rate", "latency")
DEFAULT_GATE = ("ctr", "mrr", "fallback_rate")
#: Arm name for records without the grouping field (written before rollouts existed).
NO_VALUE = "(none)"


class CompareInputError(ValueError):
    """The log cannot support a comparison (no control, no candidate, no events)."""


@dataclass
class Arm:
    """What one arm served, and the feedback its served requests got."""

    name: str
    requests: int = 0  #: request records (served and shadow)
    served: int = 0
    fallbacks: int = 0
    latency_ms: list[float] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)
    #: per served request: 0-based position of its first positive feedback, or -1
    first_click: list[int] = field(default_factory=list)
    feedback: int = 0  #: feedback records joined to this arm's served requests
    clicks_by_position: Counter = field(default_factory=Counter)
    clicks_without_position: int = 0

    @property
    def shadow(self) -> int:
        """Request records of the non-served arm of a shadow-compare."""
        return self.requests - self.served

    def clicked_at(self, k: int) -> np.ndarray:
        """Per served request: True when a positive feedback sits at a position < k."""
        first = np.asarray(self.first_click, dtype=np.int64)
        return (first >= 0) & (first < k)

    def reciprocal_ranks(self) -> np.ndarray:
        """1/(first clicked position + 1) of the served requests that got a click."""
        first = np.asarray(self.first_click, dtype=np.int64)
        return 1.0 / (first[first >= 0] + 1.0)


@dataclass
class Arms:
    """Every arm found, keyed by name, plus what could not be used."""

    by: str
    k: int
    arms: dict[str, Arm]
    feedback_unmatched: int = 0  #: feedback whose request is not in the window/log
    feedback_on_shadow: int = 0  #: feedback naming a non-served (shadow) record


def collect(events: Iterable[dict], *, by: str = "variant", k: int = 3) -> Arms:
    """Group request records into arms and join feedback to them.

    Args:
        events: Event records (``read_events(path, kind=None)``), any order.
        by: ``"variant"`` or ``"model_version"``.
        k: Cut-off of click-through@k.

    Raises:
        ValueError: For an unknown ``by`` or ``k < 1``.
    """
    if by not in GROUP_FIELDS:
        raise ValueError(f"by must be one of {GROUP_FIELDS}, got {by!r}")
    if k < 1:
        raise ValueError("k must be >= 1")
    arms: dict[str, Arm] = {}
    served_arm: dict[str, Arm] = {}  # request_id -> arm of the served record
    shadow_ids: set[str] = set()
    # (request_id, label, position) only: a long log must not be held in memory
    feedback: list[tuple] = []
    for row in events:
        kind = row.get("event") or REQUEST_EVENT
        if kind == FEEDBACK_EVENT:
            feedback.append((row.get("request_id"), row.get("label"), row.get("position")))
            continue
        if kind != REQUEST_EVENT:
            continue
        name = row.get(by) or NO_VALUE
        arm = arms.get(name)
        if arm is None:
            arm = arms[name] = Arm(name)
        arm.requests += 1
        if row.get("status") == "fallback":
            arm.fallbacks += 1
        latency = row.get("latency_total_ms")
        if isinstance(latency, (int, float)) and math.isfinite(latency):
            arm.latency_ms.append(float(latency))
        top1 = row.get("score_top1")
        if isinstance(top1, (int, float)) and math.isfinite(top1):
            arm.top1.append(float(top1))
        request_id = row.get("request_id")
        if row.get("served") is False:
            if request_id:
                shadow_ids.add(request_id)
            continue
        arm.served += 1
        if request_id:
            served_arm[request_id] = arm
    first: dict[str, int] = {}
    result = Arms(by, k, arms)
    for request_id, label, position in feedback:
        arm = served_arm.get(request_id)
        if arm is None:
            if request_id in shadow_ids:
                result.feedback_on_shadow += 1
            else:
                result.feedback_unmatched += 1
            continue
        arm.feedback += 1
        if not isinstance(label, (int, float)) or not label > 0:
            continue
        if not isinstance(position, int) or position < 0:
            arm.clicks_without_position += 1
            continue
        arm.clicks_by_position[position] += 1
        if position < first.get(request_id, math.inf):
            first[request_id] = position
    for request_id, arm in served_arm.items():
        arm.first_click.append(first.get(request_id, -1))
    return result


# -- statistics ---------------------------------------------------------------------
@dataclass(frozen=True)
class Test:
    """One candidate-vs-control test."""

    metric: str
    test: str
    control: float | None
    candidate: float | None
    p_value: float | None  #: None when there is nothing to test
    worse: bool  #: significant at the corrected level and in the bad direction
    better: bool
    gated: bool
    n_needed: int | None  #: per arm, to detect this difference at the requested power
    note: str = ""

    @property
    def relative_change(self) -> float | None:
        if self.control in (None, 0) or self.candidate is None:
            return None
        return (self.candidate - self.control) / self.control


def _z(value: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(value))


def proportions_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, str]:
    """Two-sided p-value for proportions x1/n1 (control) vs x2/n2 (candidate)."""
    from scipy.stats import fisher_exact, norm

    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled))
    if x1 + x2 == 0 or x1 + x2 == n1 + n2:
        return 1.0, "z-test"
    if expected < 5:
        _, p_value = fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])
        return float(p_value), "Fisher exact"
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x2 / n2 - x1 / n1) / se
    return float(2 * norm.sf(abs(z))), "z-test"


def proportions_sample_size(p1: float, p2: float, *, alpha: float, power: float
                            ) -> int | None:
    """Per-arm n for a two-sided two-proportion z-test to detect p1 vs p2."""
    if p1 == p2:
        return None
    z_a, z_b = _z(1 - alpha / 2), _z(power)
    p_bar = (p1 + p2) / 2
    root = (z_a * math.sqrt(2 * p_bar * (1 - p_bar))
            + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))
    return math.ceil(root ** 2 / (p1 - p2) ** 2)


def rank_test(control: np.ndarray, candidate: np.ndarray) -> tuple[float, int]:
    """Two-sided Mann-Whitney p-value and direction (+1: candidate tends larger)."""
    from scipy.stats import mannwhitneyu

    if len(control) == 0 or len(candidate) == 0:
        return 1.0, 0
    result = mannwhitneyu(candidate, control, alternative="two-sided")
    middle = len(candidate) * len(control) / 2
    direction = 0 if result.statistic == middle else (1 if result.statistic > middle else -1)
    p_value = float(result.pvalue)
    return (1.0 if math.isnan(p_value) else p_value), direction


def means_sample_size(control: np.ndarray, candidate: np.ndarray, *, alpha: float,
                      power: float) -> int | None:
    """Per-arm n to detect the observed difference of means (normal approximation,
    divided by Mann-Whitney's asymptotic efficiency 3/pi)."""
    if len(control) < 2 or len(candidate) < 2:
        return None
    delta = float(np.mean(candidate) - np.mean(control))
    variance = (float(np.var(control, ddof=1)) + float(np.var(candidate, ddof=1))) / 2
    if delta == 0 or variance == 0:
        return None
    z_a, z_b = _z(1 - alpha / 2), _z(power)
    return math.ceil(2 * (z_a + z_b) ** 2 * variance / delta ** 2 / (3 / math.pi))


# -- the comparison -----------------------------------------------------------------
@dataclass
class Report:
    """Per-arm figures, the tests of each candidate, and the verdict."""

    by: str
    k: int
    control: str
    alpha: float
    power: float
    gate: tuple[str, ...]
    level: float  #: per-test significance level after the Bonferroni correction
    summaries: dict[str, dict]
    tests: dict[str, list[Test]]
    notes: list[str]

    @property
    def worse(self) -> bool:
        """True when any candidate is significantly worse on a gated metric."""
        return any(t.worse and t.gated for tests in self.tests.values() for t in tests)

    def as_dict(self) -> dict:
        return {
            "by": self.by, "k": self.k, "control": self.control, "alpha": self.alpha,
            "power": self.power, "gate": list(self.gate), "level": self.level,
            "worse": self.worse, "arms": self.summaries,
            "tests": {name: [{**t.__dict__, "relative_change": t.relative_change}
                             for t in tests] for name, tests in self.tests.items()},
            "notes": self.notes,
        }


def _quantiles(values: Sequence[float], qs: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{round(q * 100)}": None for q in qs}
    found = np.quantile(np.asarray(values, dtype=np.float64), qs)
    return {f"p{round(q * 100)}": float(v) for q, v in zip(qs, found, strict=True)}


def summarize(arm: Arm, k: int) -> dict:
    """The figures of one arm (plain numbers, for the table and the JSON)."""
    clicked = arm.clicked_at(k)
    ranks = arm.reciprocal_ranks()
    clicks = sum(arm.clicks_by_position.values())
    return {
        "requests": arm.requests, "served": arm.served, "shadow": arm.shadow,
        "fallback_rate": arm.fallbacks / arm.requests if arm.requests else None,
        "latency_ms": _quantiles(arm.latency_ms, (0.5, 0.95, 0.99)),
        "top1_score": {"mean": float(np.mean(arm.top1)) if arm.top1 else None,
                       **_quantiles(arm.top1, (0.1, 0.5, 0.9))},
        "feedback": arm.feedback,
        "ctr_at_k": float(clicked.mean()) if arm.served else None,
        "mrr_clicked": float(ranks.mean()) if len(ranks) else None,
        "clicked_requests": int(len(ranks)),
        "top_click_share": (arm.clicks_by_position.get(0, 0) / clicks) if clicks else None,
        "clicks_by_position": {str(p): n for p, n in sorted(arm.clicks_by_position.items())},
        "clicks_without_position": arm.clicks_without_position,
    }


def _candidate_tests(control: Arm, candidate: Arm, *, k: int, gate: Sequence[str],
                     level: float, power: float) -> list[Test]:
    tests = []
    # CTR@k over served requests
    c_clicks, n_clicks = control.clicked_at(k), candidate.clicked_at(k)
    if control.served and candidate.served and (control.feedback or candidate.feedback):
        x1, x2 = int(c_clicks.sum()), int(n_clicks.sum())
        p1, p2 = x1 / control.served, x2 / candidate.served
        p_value, name = proportions_test(x1, control.served, x2, candidate.served)
        significant = p_value < level
        tests.append(Test("ctr", name, p1, p2, p_value, significant and p2 < p1,
                          significant and p2 > p1, "ctr" in gate,
                          proportions_sample_size(p1, p2, alpha=level, power=power)))
    else:
        tests.append(Test("ctr", "z-test", None, None, None, False, False, "ctr" in gate,
                          None, "no served requests with feedback in one arm"))
    # MRR of clicked requests
    c_rr, n_rr = control.reciprocal_ranks(), candidate.reciprocal_ranks()
    if len(c_rr) and len(n_rr):
        p_value, direction = rank_test(c_rr, n_rr)
        significant = p_value < level
        tests.append(Test("mrr", "Mann-Whitney U", float(c_rr.mean()), float(n_rr.mean()),
                          p_value, significant and direction < 0,
                          significant and direction > 0, "mrr" in gate,
                          means_sample_size(c_rr, n_rr, alpha=level, power=power)))
    else:
        tests.append(Test("mrr", "Mann-Whitney U", None, None, None, False, False,
                          "mrr" in gate, None, "no clicked requests in one arm"))
    # fallback rate over every request record
    if control.requests and candidate.requests:
        p1, p2 = control.fallbacks / control.requests, candidate.fallbacks / candidate.requests
        p_value, name = proportions_test(control.fallbacks, control.requests,
                                         candidate.fallbacks, candidate.requests)
        significant = p_value < level
        tests.append(Test("fallback_rate", name, p1, p2, p_value, significant and p2 > p1,
                          significant and p2 < p1, "fallback_rate" in gate,
                          proportions_sample_size(p1, p2, alpha=level, power=power)))
    # latency
    c_lat = np.asarray(control.latency_ms, dtype=np.float64)
    n_lat = np.asarray(candidate.latency_ms, dtype=np.float64)
    if len(c_lat) and len(n_lat):
        p_value, direction = rank_test(c_lat, n_lat)
        significant = p_value < level
        tests.append(Test("latency", "Mann-Whitney U", float(np.median(c_lat)),
                          float(np.median(n_lat)), p_value, significant and direction > 0,
                          significant and direction < 0, "latency" in gate,
                          means_sample_size(c_lat, n_lat, alpha=level, power=power),
                          "medians in ms"))
    return tests


def compare(arms: Arms, *, control: str | None = None, alpha: float = 0.05,
            power: float = 0.8, gate: Sequence[str] = DEFAULT_GATE,
            min_requests: int = 100) -> Report:
    """Test every candidate arm against ``control``.

    Args:
        arms: From :func:`collect`.
        control: The control arm. Defaults to ``"control"`` by variant, and to the arm
            with the most served requests by model version.
        alpha: Family-wise significance level (Bonferroni over gated metrics x
            candidates). Defaults to 0.05.
        power: Power for the sample sizes reported. Defaults to 0.8.
        gate: Metrics whose significant worsening makes :attr:`Report.worse` true.
        min_requests: Candidates with fewer request records are reported but not
            tested (too little traffic for a verdict). Defaults to 100.

    Raises:
        CompareInputError: No request records, no control arm, or no candidate.
        ValueError: An unknown metric in ``gate`` or ``alpha``/``power`` outside (0, 1).
    """
    unknown = sorted(set(gate) - set(GATE_METRICS))
    if unknown:
        raise ValueError(f"unknown gate metric(s) {unknown}; choose from {GATE_METRICS}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    if not arms.arms:
        raise CompareInputError("no rerank request records found (empty log or window)")
    if control is None:
        control = (CONTROL_VARIANT if arms.by == "variant" else
                   max(arms.arms.values(), key=lambda arm: arm.served).name)
    if control not in arms.arms:
        raise CompareInputError(
            f"no requests of control {control!r} by {arms.by}; arms found: "
            f"{', '.join(sorted(arms.arms))}")
    candidates = [arm for name, arm in sorted(arms.arms.items()) if name != control]
    if not candidates:
        raise CompareInputError(f"only the control arm {control!r} is in the log: nothing "
                                "to compare (is the split 0?)")
    notes = []
    testable = [arm for arm in candidates if arm.requests >= min_requests]
    for arm in candidates:
        if arm.requests < min_requests:
            notes.append(f"{arm.name}: only {arm.requests} request(s) (< {min_requests}): "
                         "reported, not tested; wait for more traffic")
    gated = [m for m in gate]
    level = alpha / max(1, len(gated) * len(testable))
    base = arms.arms[control]
    tests = {arm.name: _candidate_tests(base, arm, k=arms.k, gate=gated, level=level,
                                        power=power) for arm in testable}
    summaries = {name: summarize(arm, arms.k) for name, arm in
                 sorted(arms.arms.items(), key=lambda kv: kv[0] != control)}
    notes += _feedback_notes(arms, summaries)
    return Report(arms.by, arms.k, control, alpha, power, tuple(gated), level, summaries,
                  tests, notes)


def _feedback_notes(arms: Arms, summaries: dict[str, dict]) -> list[str]:
    notes = []
    shares = {name: s["top_click_share"] for name, s in summaries.items()
              if s["top_click_share"] is not None}
    if shares:
        figures = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
        notes.append(
            f"position bias: share of clicks on position 0: {figures}. Users click the top "
            "more whatever it holds, so CTR and MRR compare arms shown the same way to "
            "randomly split users; they are not absolute relevance, and an arm that "
            "reorders more can look worse on MRR while showing better results lower down")
    else:
        notes.append("no positive feedback with a position: CTR and MRR cannot be judged "
                     "(does the app call reranker.feedback(request_id, doc_id, position=...)?)")
    if arms.feedback_unmatched:
        notes.append(f"{arms.feedback_unmatched} feedback record(s) name a request outside "
                     "the log or window and were not counted")
    if arms.feedback_on_shadow:
        notes.append(f"{arms.feedback_on_shadow} feedback record(s) name a shadow "
                     "(non-served) record and were not counted")
    return notes


def format_report(report: Report) -> str:
    """The human-readable table and verdict."""
    def pct(value):
        return "-" if value is None else f"{value:.2%}"

    def num(value, spec=".3f"):
        return "-" if value is None else format(value, spec)

    lines = [f"arms by {report.by} (control: {report.control})", ""]
    header = (f"{'arm':<16}{'requests':>9}{'served':>8}{'fallback':>9}{'p50 ms':>9}"
              f"{'p95 ms':>9}{'p99 ms':>9}{'top1 mean':>10}{'top1 p50':>9}"
              f"{'CTR@' + str(report.k):>8}{'MRR clk':>8}")
    lines.append(header)
    for name, s in report.summaries.items():
        lat, top = s["latency_ms"], s["top1_score"]
        lines.append(
            f"{name[:15]:<16}{s['requests']:>9}{s['served']:>8}{pct(s['fallback_rate']):>9}"
            f"{num(lat['p50'], '.1f'):>9}{num(lat['p95'], '.1f'):>9}{num(lat['p99'], '.1f'):>9}"
            f"{num(top['mean']):>10}{num(top['p50']):>9}{pct(s['ctr_at_k']):>8}"
            f"{num(s['mrr_clicked']):>8}")
    lines += ["", f"tests (two-sided, Bonferroni level {report.level:.4g} = alpha "
                  f"{report.alpha:g} / {len(report.gate)} gated metric(s) x "
                  f"{max(1, len(report.tests))} candidate(s); n for power {report.power:g}):"]
    for name, tests in report.tests.items():
        for t in tests:
            if t.p_value is None:
                lines.append(f"  {name} {t.metric:<14} not tested: {t.note}")
                continue
            change = t.relative_change
            verdict = "WORSE" if t.worse else "better" if t.better else "no significant change"
            lines.append(
                f"  {name} {t.metric:<14}{num(t.control, '.4g'):>9} -> "
                f"{num(t.candidate, '.4g'):<9}"
                f"{'' if change is None else f'({change:+.1%}) '}{t.test}, p={t.p_value:.3g}"
                f", n/arm needed={t.n_needed if t.n_needed is not None else '-'}: {verdict}"
                f"{'' if t.gated else ' (not gated)'}")
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append("")
    lines.append("verdict: candidate significantly WORSE than control (exit 3)" if report.worse
                 else "verdict: no candidate significantly worse than control (exit 0)")
    return "\n".join(lines)
