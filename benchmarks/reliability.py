"""Reproduce every figure of the README's "Reliability" section.

The figures come from the tests themselves (each records what it measured with
pytest's ``record_property``), so the README, this script and CI can never
disagree about how a number was produced. Run from the project root::

    python benchmarks/reliability.py            # default suites (~2-3 min idle)
    python benchmarks/reliability.py --slow     # plus soak and long fuzz runs
    RERANK_FUZZ_SECONDS=600 python benchmarks/reliability.py --slow

It prints one line per figure and exits non-zero when any test failed.

The tests themselves assert bounds that hold on a loaded CI machine (configured
timeouts plus a scheduling allowance measured around the run, see tests/timing.py).
The tight figures an idle machine must meet live here, in :data:`TIGHT_BUDGETS`:
each matching figure is printed with its budget and ``within`` or ``OVER``, and any
``OVER`` also makes the exit code non-zero. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = [
    "tests/test_breaker_model.py",
    "tests/test_hung_inference.py",
    "tests/test_remote_overload.py",
    "tests/test_redis_outages.py",
    "tests/test_hostile_cache.py",
    "tests/test_differential.py",
    "tests/test_event_sink_faults.py",
    "tests/test_privacy_dictionary.py",
    "tests/test_invariants.py",
    "tests/test_fuzz.py",
    "tests/test_faults.py",
]
SLOW_SUITES = ["tests/test_soak.py", "tests/test_fuzz.py"]
#: (property name ending, tight budget, what it is) -- the idle-machine guarantees
TIGHT_BUDGETS = [
    ("hung-sync_p99_ms", 60.0, "p99 of a 50 ms deadline against a hung model, sync"),
    ("hung-async_p99_ms", 60.0, "p99 of a 50 ms deadline against a hung model, async"),
    ("_max_added_ms", 50.0, "worst latency a Redis outage adds (25 ms connect + 25 ms read)"),
    ("_emit_p99_us", 50.0, "event-log emit p99 with a failing or wedged sink"),
    ("_over_deadline_ms", 50.0, "slowest request past its deadline, hung scorer"),
]


def tight_budget(prop: str) -> tuple[float, str] | None:
    for ending, budget, what in TIGHT_BUDGETS:
        if prop.endswith(ending):
            return budget, what
    return None


def run(paths: list[str], marker: str) -> tuple[int, list[tuple[str, str, str, str]]]:
    """Run pytest on ``paths``; returns (exit code, [(test, outcome, property, value)])."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
             "-o", "junit_family=legacy", f"--junitxml={report}", *paths], cwd=ROOT)
        rows = []
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome = "failed" if case.find("failure") is not None or \
                case.find("error") is not None else \
                "skipped" if case.find("skipped") is not None else "passed"
            name = case.get("name", "")
            time_s = case.get("time", "0")
            props = case.find("properties")
            rows.append((name, outcome, "duration_s", time_s))
            for prop in props if props is not None else []:
                rows.append((name, outcome, prop.get("name", ""), prop.get("value", "")))
    return code, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also run soak and long fuzz")
    args = parser.parse_args()
    code, rows = run(SUITES, "not slow")
    if args.slow:
        slow_code, slow_rows = run(SLOW_SUITES, "slow")
        code, rows = code or slow_code, rows + slow_rows
    over = 0
    for name, outcome, prop, value in rows:
        if prop == "duration_s" and outcome == "passed":
            continue
        line = f"{outcome:7s} {name:80s} {prop} = {value}"
        budget = tight_budget(prop)
        if budget is not None:
            within = float(value) <= budget[0]
            over += not within
            line += f"  [tight budget {budget[0]:g}: {'within' if within else 'OVER'}]"
        print(line)
    if over:
        print(f"{over} figure(s) over their tight budget (is the machine idle?)")
    return code or (1 if over else 0)


if __name__ == "__main__":
    sys.exit(main())
