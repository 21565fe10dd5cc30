"""Reproduce every figure of the README's "Reliability" section.

The figures come from the tests themselves (each records what it measured with
pytest's ``record_property``), so the README, this script and CI can never
disagree about how a number was produced. Run from the project root::

    python benchmarks/reliability.py            # default suites (~2-3 min idle)
    python benchmarks/reliability.py --slow     # plus soak and long fuzz runs
    RERANK_FUZZ_SECONDS=600 python benchmarks/reliability.py --slow

It prints one line per figure and exits non-zero when any test failed.
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
]
SLOW_SUITES = ["tests/test_soak.py", "tests/test_fuzz.py"]


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
    for name, outcome, prop, value in rows:
        if prop == "duration_s" and outcome == "passed":
            continue
        print(f"{outcome:7s} {name:80s} {prop} = {value}")
    return code


if __name__ == "__main__":
    sys.exit(main())
