"""What the Makefile's targets print (issue 18): `make demo` piped to a file carries no terminal escape
codes. The demo's kmc is replaced by a stub that echoes its arguments: this checks the script's own output,
in seconds, without starting clusters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import on_terminal

ROOT = Path(__file__).resolve().parent.parent
ESC = "\x1b["


def stub_env(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "bin" / "kmc"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "kmc $*"\n')
    stub.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    env["PATH"] = f"{stub.parent}:{env['PATH']}"
    return env


def test_demo_piped_has_no_escape_codes(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=stub_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "$ kmc sandbox up dc1 dc2 central dr\nkmc sandbox up dc1 dc2 central dr\n" in proc.stdout
    assert ESC not in proc.stdout + proc.stderr


def test_demo_on_a_terminal_shows_commands_in_bold(tmp_path: Path) -> None:
    code, text, err = on_terminal(["bash", str(ROOT / "scripts" / "demo.sh")], stub_env(tmp_path))
    assert code == 0, err
    assert f"{ESC}1m$ kmc sandbox up dc1 dc2 central dr{ESC}0m" in text
