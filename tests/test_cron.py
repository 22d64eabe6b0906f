"""The README's crontab lines, run the way cron runs them (issue 18): a shell started with only cron's
variables (HOME, LOGNAME, SHELL, the crontab's PATH) and those the line sets, no terminal, stdin closed.
The lines are read from the README, so the README stays true. Data is checked with confluent-kafka.

Topology (the README's, on sandboxes): dc1 (src) is aggregated into central (dst), which fans out to dr1
and dr2 (both the ``hop`` sandbox).
"""

from __future__ import annotations

import fcntl
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmc import sandbox
from tests.conftest import sandboxes
from tests.helpers import count, create_topic, numbered, produce

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent
KMC = Path(sys.executable).parent / "kmc"  # the console script installed next to this interpreter


def readme_crontab() -> tuple[dict[str, str], str]:
    """The crontab block of the README: its variable lines, and the command of its schedule line."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("From cron, every five minutes", 1)[1].split("```", 2)[1]
    variables, command = {}, None
    for line in block.strip().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            variables[name] = value
        elif line.startswith("*/"):
            command = line.split(None, 5)[5]
    assert command is not None, block
    return variables, command


@pytest.fixture(scope="module")
def hop_cluster(src_cluster) -> Iterator[sandbox.SandboxCluster]:  # noqa: ANN001 - src/dst start first
    with sandboxes(["hop"]) as clusters:
        yield clusters[0]


class Cron:
    """A home directory with kmc's config and a crontab environment to run the README's line in."""

    def __init__(self, tmp_path: Path, src, dst, hop) -> None:  # noqa: ANN001 - SandboxClusters
        self.home = tmp_path / "home"
        self.log = tmp_path / "kmc-flows.jsonl"
        suffix = uuid.uuid4().hex[:6]
        self.orders, self.payments = f"orders-{suffix}", f"payments-{suffix}"
        config = self.home / ".config" / "kmc" / "config.toml"
        config.parent.mkdir(parents=True)
        address = {name: json.dumps(list(cluster.bootstrap)) for name, cluster in
                   (("src", src), ("dst", dst), ("hop", hop))}
        config.write_text(f"""\
[clusters.dc1]
bootstrap = {address["src"]}
[clusters.central]
bootstrap = {address["dst"]}
password = "${{CENTRAL_PASSWORD}}"   # the variable the crontab line sets (PLAINTEXT: not sent)
[clusters.dr1]
bootstrap = {address["hop"]}
[clusters.dr2]
bootstrap = {address["hop"]}

[flows.aggregate]
from = ["dc1"]
to = "central"
topics = ["{self.orders}", "{self.payments}"]
rename = "{{source}}.{{topic}}"

[flows.dr1]
from = ["central"]
to = "dr1"
topics = ["dc1\\\\.{self.orders}"]

[flows.dr2-payments]
from = ["central"]
to = "dr2"
topics = ["dc1\\\\.{self.payments}"]
""")
        variables, command = readme_crontab()
        # kmc "installed" in the directory the crontab's PATH names first
        installed = tmp_path / "bin"
        installed.mkdir()
        (installed / "kmc").symlink_to(KMC)
        path = variables.pop("PATH")
        self.env = {"HOME": str(self.home), "LOGNAME": "kmc", "SHELL": "/bin/sh",
                    "PATH": path.replace(path.split(":")[0], str(installed), 1), **variables}
        self.command = (command.replace("CENTRAL_PASSWORD=...", "CENTRAL_PASSWORD=cron-secret")
                        .replace("/var/log/kmc-flows.jsonl", shlex.quote(str(self.log))))
        assert "kmc flow run" in self.command and "--once" in self.command

    def run(self, command: str | None = None, background: bool = False) -> Any:
        """The line as cron runs it: /bin/sh -c, stdin closed, no controlling terminal."""
        popen = subprocess.Popen(["/bin/sh", "-c", f"{command or self.command} 0<&-"], env=self.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        if background:
            return popen
        stdout, stderr = popen.communicate(timeout=240)
        return subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)

    def documents(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def held_locks(self) -> int:
        locks = self.home / ".local" / "state" / "kmc" / "locks"
        held = 0
        for path in locks.glob("*.lock") if locks.is_dir() else []:
            with open(path, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except BlockingIOError:
                    held += 1
        return held


@pytest.fixture
def cron(tmp_path: Path, src_cluster, dst_cluster, hop_cluster) -> Cron:  # noqa: ANN001
    assert KMC.exists(), "run the tests from the project's .venv"
    return Cron(tmp_path, src_cluster, dst_cluster, hop_cluster)


def test_the_readme_crontab_line_runs_under_cron(cron: Cron, src_cluster, dst_cluster, hop_cluster) -> None:  # noqa: ANN001
    create_topic(src_cluster, cron.orders, 3)
    create_topic(src_cluster, cron.payments, 2)
    produce(src_cluster, cron.orders, numbered(60, 3))
    produce(src_cluster, cron.payments, numbered(40, 2))

    first = cron.run()
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")  # -q: nothing for cron to mail
    [document] = cron.documents()  # one JSON document, on one line
    assert document["records"] == 60 + 40 + 60 + 40 and document["failures"] == []
    assert count(dst_cluster, f"dc1.{cron.orders}") == 60 and count(dst_cluster, f"dc1.{cron.payments}") == 40
    assert count(hop_cluster, f"dc1.{cron.orders}") == 60 and count(hop_cluster, f"dc1.{cron.payments}") == 40

    produce(src_cluster, cron.orders, numbered(15, 3, start=60))
    second = cron.run()
    assert (second.returncode, second.stderr) == (0, "")
    assert [doc["records"] for doc in cron.documents()] == [200, 30]
    assert count(hop_cluster, f"dc1.{cron.orders}") == 75

    # without the variable the line sets, central cannot be used: a configuration error, mailed by cron
    unset = cron.run(cron.command.replace("CENTRAL_PASSWORD=cron-secret ", ""))
    assert unset.returncode == 3 and "CENTRAL_PASSWORD is not set" in unset.stderr
    assert len(cron.documents()) == 2  # nothing appended


def test_an_overlapping_run_exits_75_and_changes_nothing(cron: Cron, src_cluster) -> None:  # noqa: ANN001
    create_topic(src_cluster, cron.orders, 1)
    create_topic(src_cluster, cron.payments, 1)
    # the previous run, still going: the same flows, following (exec: the shell becomes kmc, to signal it)
    following = cron.command.replace("--once", "--follow").replace(" kmc ", " exec kmc ").split(">>")[0]
    previous = cron.run(f"{following} > /dev/null", background=True)
    try:
        deadline = time.monotonic() + 120
        while cron.held_locks() < 3:  # every mirror of the line holds its lock
            assert previous.poll() is None, previous.communicate()
            assert time.monotonic() < deadline, "the first run never took its locks"
            time.sleep(0.2)
        overlap = cron.run()
        assert overlap.returncode == 75, overlap.stderr
        assert overlap.stderr.count("kmc: error:") >= 1 and "holds the lock" in overlap.stderr
        [document] = cron.documents()
        assert document["records"] == 0 and {failure["exit_code"] for failure in document["failures"]} == {75}
    finally:
        previous.send_signal(signal.SIGTERM)
        _, stderr = previous.communicate(timeout=60)
    assert previous.returncode == 0, stderr
