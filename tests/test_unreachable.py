"""What `kmc flow status` and `kmc flow run --dry-run` say when clusters do not answer (issue 18): the error
in the row it belongs to, and no "nothing changed" before an error that says nothing could be planned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import kmc
from tests.test_exit_codes import closed_port


@pytest.fixture
def down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[clusters.a]\nbootstrap = ["127.0.0.1:{closed_port()}"]\n'
                    f'[clusters.b]\nbootstrap = ["127.0.0.1:{closed_port()}"]\n'
                    '[flows.f]\nfrom = ["a"]\nto = "b"\n[flows.g]\nfrom = ["b"]\nto = "a"\nrename = "g.{topic}"\n')
    monkeypatch.setenv("KMC_CONFIG", str(path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return path


def test_flow_status_shows_why_a_row_has_no_numbers(down: Path) -> None:
    result = kmc("flow", "status", "--timeout", "1", expect=4)
    lines = result.stdout.splitlines()
    assert lines[0].split()[-1] == "ERROR"
    assert [line.split()[:2] for line in lines[1:]] == [["f", "a"], ["g", "b"]]
    assert "a: connect: cannot reach 127.0.0.1:" in lines[1] and "b: connect: cannot reach" in lines[2]
    assert result.stderr.count("kmc: error:") == 1  # the exit status's line; the rows carry each error
    rows = kmc("flow", "status", "--timeout", "1", "-o", "json", expect=4).json()
    assert [row["error"] is not None for row in rows] == [True, True]


def test_a_dry_run_that_could_plan_nothing_does_not_say_nothing_changed(down: Path) -> None:
    result = kmc("flow", "run", "--all", "--dry-run", "--timeout", "1", expect=4)
    assert result.stdout == ""
    assert result.stderr.startswith("kmc: error: all 2 mirrors failed: f: a -> b: a: connect: cannot reach")
    assert "nothing changed" not in result.stderr and result.stderr.count("\n") == 1
    document = kmc("flow", "run", "--all", "--dry-run", "--timeout", "1", "-o", "json", expect=4).json()
    assert document["plans"] == [] and len(document["failures"]) == 2
    csv_header = kmc("flow", "run", "--all", "--dry-run", "--timeout", "1", "-o", "csv", expect=4).stdout
    assert csv_header.startswith("flow,source,source_topic,target_topic,")  # the header, as always


@pytest.mark.kafka
def test_a_dry_run_with_one_source_down_says_what_was_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    from tests.helpers import create_topic

    create_topic(src_cluster, topic_name, 2)
    path = tmp_path / "config.toml"
    path.write_text(f'[clusters.down]\nbootstrap = ["127.0.0.1:{closed_port()}"]\n'
                    f'[flows.up]\nfrom = ["src"]\nto = "dst"\ntopics = ["{topic_name}"]\nrename = "x.{{topic}}"\n'
                    '[flows.gone]\nfrom = ["down"]\nto = "dst"\n')
    monkeypatch.setenv("KMC_CONFIG", str(path))
    result = kmc("flow", "run", "--all", "--dry-run", "--timeout", "2", expect=6)
    assert f"x.{topic_name}" in result.stdout
    assert "dry run: nothing changed (1 topics planned; 1 of 2 mirrors could not be planned)" in result.stderr
    assert json.loads(kmc("flow", "run", "--all", "--dry-run", "--timeout", "2", "-o", "json",
                          expect=6).stdout)["failures"][0]["source"] == "down"
