"""What a newcomer sees: `facereel demo` (README's first command) prints facereel's own
lines only; Ray's notices, native error lines and "(raylet)" relays go to a log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, free_port

# The demo's own lines: a numbered step, or an indented detail of one (app/entry/demo.py).
DEMO_LINE = re.compile(r"^(\d/5 \S|    \S|      \S)")


def test_demo_prints_only_its_own_lines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "FACEREEL_"))}
    env["FACEREEL_API__PUBLIC_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    run = subprocess.run(
        [sys.executable, "-m", "app.entry.cli", "--data-dir", str(tmp_path / "data"), "demo", "--dir", "demo-data"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 0, "\n".join(lines[-30:])
    foreign = [line for line in lines if not DEMO_LINE.match(line)]
    assert not foreign, f"lines that are not the demo's own: {foreign}"
    assert any(line.startswith("5/5 completed") for line in lines), lines
    saved = list((tmp_path / "demo-data" / "clips").glob("*.mp4"))
    assert saved, "the demo saved no clip"
    # Ray's output was kept, not lost: the native line Ray Data's actor pools print went there.
    library_log = tmp_path / "data" / "logs" / "demo.log"
    assert "core_worker" in library_log.read_text(errors="replace")
