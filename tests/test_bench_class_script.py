"""``scripts/bench-class.sh`` names its results by the hardware class it detects.

Only the parts that decide the names run here: the class detection (the library's
rule, ``rerank_plugins.device.hardware_class``, which the harness uses too) and the
refusal of an unknown step, which must come before any benchmark starts (a typo would
otherwise cost the first steps' minutes and then fail).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench-class.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import machine  # noqa: E402

from rerank_plugins.device import read_cpu_flags  # noqa: E402


def test_unknown_step_is_refused_before_any_step_runs():
    # a real step first: it must not start (it would take a minute and print versions)
    result = subprocess.run(["bash", str(SCRIPT), "ov_profile", "no_such_step"],
                            capture_output=True, text=True, timeout=600,
                            env={"PY": sys.executable, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "unknown step no_such_step" in result.stderr
    assert "versions:" not in result.stdout and "== ov_profile" not in result.stdout
    expected = machine.hardware_class(read_cpu_flags())
    assert f"hardware class {expected};" in result.stdout


def test_harness_without_redis_server_stops_before_measuring(tmp_path):
    # the cache-hit phase needs a real redis-server and comes after ~20 minutes of
    # measuring; a machine without one must hear so at once (exit 2), not then
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
         "--out", str(tmp_path / "never.json")],
        capture_output=True, text=True, timeout=600,
        env={"PATH": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "redis-server" in result.stderr and "--no-redis" in result.stderr
    assert "requests; trained head" not in result.stderr  # nothing was loaded or run
    assert not (tmp_path / "never.json").exists()
