"""``scripts/install-system-deps.sh`` decides what to install by what it finds on PATH.

Only its ``has`` check runs here (the script is sourced, so nothing is installed): a
file that merely exists under a required name (no execute bit, or not a regular file,
as when ``/dev/null`` is bind-mounted over a binary) must count as missing, or a broken
install is reported "present" and the tests fail later with a less useful message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-system-deps.sh"


def _has(name: str, path: Path) -> bool:
    result = subprocess.run(["bash", "-c", f'source "{SCRIPT}" && has "{name}"'],
                            env={"PATH": f"{path}:/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=30)
    assert "installing" not in result.stdout, result.stdout  # sourcing must not install
    return result.returncode == 0


def test_has_accepts_an_executable_and_refuses_files_that_cannot_run(tmp_path):
    runnable = tmp_path / "rp-tool-ok"
    runnable.write_text("#!/bin/sh\nexit 0\n")
    runnable.chmod(0o755)
    plain = tmp_path / "rp-tool-plain"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    os.symlink("/dev/null", tmp_path / "rp-tool-device")  # what a bind mount looks like
    assert _has("rp-tool-ok", tmp_path)
    assert not _has("rp-tool-plain", tmp_path)
    assert not _has("rp-tool-device", tmp_path)
    assert not _has("rp-tool-absent", tmp_path)
