"""`kmc flow graph`: the configured flows drawn as text, Mermaid and DOT; with --status, lag on the edges."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import create_topic, kmc, numbered, produce

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.toml"


def test_the_demo_topology_in_each_format() -> None:
    text = kmc("--config", str(DEMO), "flow", "graph").stdout
    assert text.splitlines() == [
        "    dc1 --[ aggregate: orders, payments, clicks, customers as {source}.{topic} ]--> central",
        "    dc2 --[ aggregate: orders, payments, clicks, customers as {source}.{topic} ]--> central",
        "central --[ fanout: dc[0-9]+\\..* ]--> dr",
    ]
    mermaid = kmc("--config", str(DEMO), "flow", "graph", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and mermaid.count("-->|") == 3
    dot = kmc("--config", str(DEMO), "flow", "graph", "fanout", "--format", "dot").stdout
    assert '"central" -> "dr" [label="fanout: dc[0-9]+\\\\..*"];' in dot and "dc1" not in dot
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=dot, text=True, capture_output=True, check=True)
    document = kmc("--config", str(DEMO), "flow", "graph", "-o", "json").json()
    assert document["nodes"] == ["dc1", "dc2", "central", "dr"]
    assert [(edge["flow"], edge["source"], edge["target"]) for edge in document["edges"]] == [
        ("aggregate", "dc1", "central"), ("aggregate", "dc2", "central"), ("fanout", "central", "dr")]
    lines = kmc("--config", str(DEMO), "flow", "graph", "-o", "ndjson").stdout.splitlines()
    assert [json.loads(line) for line in lines] == document["edges"]
    table = list(csv.reader(io.StringIO(kmc("--config", str(DEMO), "flow", "graph", "-o", "csv").stdout)))
    assert table[0] == ["flow", "source", "target", "topics", "exclude", "rename", "records_behind",
                        "seconds_behind", "error"]
    assert table[3] == ["fanout", "central", "dr", "dc[0-9]+\\..*", "", "{topic}", "", "", ""]


def test_a_bad_format_is_a_usage_error() -> None:
    result = kmc("--config", str(DEMO), "flow", "graph", "--format", "png", expect=2)
    assert "--format must be one of text, mermaid, dot" in result.stderr


@pytest.mark.kafka
def test_status_puts_each_edges_lag_on_it(src_cluster, dst_cluster, topic_name: str, tmp_path: Path) -> None:  # noqa: ANN001, ARG001
    create_topic(src_cluster, topic_name, partitions=2)
    produce(src_cluster, topic_name, numbered(40, 2))
    config = tmp_path / "config.toml"
    config.write_text(f'[flows.g]\nfrom = ["src"]\nto = "dst"\ntopics = ["{topic_name}"]\n')
    edge = kmc("--config", str(config), "flow", "graph", "--status", "-o", "json").json()["edges"][0]
    assert (edge["records_behind"], edge["error"]) == (40, None) and edge["seconds_behind"] > 0
    kmc("--config", str(config), "flow", "run", "g", "--once", "-q")
    text = kmc("--config", str(config), "flow", "graph", "--status").stdout
    assert text.strip() == f"src --[ g: {topic_name} ]--> dst  (0 behind, 0 s)"
