"""The deployment examples are checked by the tools that run them: the systemd unit by
``systemd-analyze verify``, the alerting rules by ``promtool check rules``, the Containerfile's command line
by kmc's own parser. A missing tool skips its test with the reason (.ci/run installs them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import kmc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian's {'prometheus' if name == 'promtool' else 'systemd'} "
                    "package; .ci/run installs it)")
    return found


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = (EXAMPLES / "systemd" / "kmc-flow@.service").read_text()
    assert "ExecStart=/usr/local/bin/kmc " in unit and " flow run %i --follow" in unit
    # verify checks that the command exists: point it at this kmc
    kmc_path = Path(sys.executable).with_name("kmc")
    (tmp_path / "kmc-flow@.service").write_text(unit.replace("/usr/local/bin/kmc", str(kmc_path)))
    checked = subprocess.run([analyze, "verify", str(tmp_path / "kmc-flow@.service")], capture_output=True,
                             text=True, check=False)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_the_alerting_rules_check() -> None:
    promtool = tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(EXAMPLES / "prometheus" / "kmc-rules.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_the_containerfiles_command_line_is_kmcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (EXAMPLES / "Containerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE).group(1))
    command = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))
    assert entrypoint[0] == "kmc"
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("KMC_CONFIG", str(config))
    # parsed as far as the flows: an empty config has none (exit 2), said as a JSON line
    result = kmc(*entrypoint[1:], *command, expect=2)
    assert json.loads(result.stderr)["message"].startswith("no flows configured")
    healthcheck = re.search(r'CMD python -c "(.*)"$', text, re.MULTILINE).group(1)
    compile(healthcheck, "HEALTHCHECK", "exec")
