"""``kmc flow graph``: the configured flows as a picture, clusters as nodes and one edge per flow and source,
labelled with the flow's name, topic patterns and rename (and, from ``kmc flow status``, how far it is
behind). Drawn as text, Mermaid (for Markdown and GitHub) or Graphviz DOT. Library code: no printing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kmc.profiles import Flow

GRAPH_FORMATS = ("text", "mermaid", "dot")


@dataclass(frozen=True)
class Edge:
    flow: str
    source: str
    target: str
    topics: tuple[str, ...]
    exclude: tuple[str, ...]
    rename: str
    records_behind: int | None = None
    seconds_behind: float | None = None
    error: str | None = None

    def label(self) -> str:
        """The flow, what it selects, and where it writes: ``aggregate: orders, payments as {source}.{topic}``."""
        text = f"{self.flow}: {', '.join(self.topics)}"
        if self.exclude:
            text += f" except {', '.join(self.exclude)}"
        if self.rename != "{topic}":
            text += f" as {self.rename}"
        return text

    def status(self) -> str | None:
        if self.error is not None:
            return "status unknown"
        if self.records_behind is None:
            return None
        seconds = "" if self.seconds_behind is None else f", {self.seconds_behind:g} s"
        return f"{self.records_behind:,} behind{seconds}"

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "source": self.source, "target": self.target, "topics": list(self.topics),
                "exclude": list(self.exclude), "rename": self.rename, "records_behind": self.records_behind,
                "seconds_behind": self.seconds_behind, "error": self.error}


@dataclass
class FlowGraph:
    nodes: list[str]
    edges: list[Edge] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``-o json`` document: nodes[] (cluster names), edges[] (flow, source, target, topics[],
        exclude[], rename, records_behind, seconds_behind, error)."""
        return {"nodes": list(self.nodes), "edges": [edge.to_dict() for edge in self.edges]}

    def draw(self, fmt: str) -> str:
        return {"text": self._text, "mermaid": self._mermaid, "dot": self._dot}[fmt]()

    def _text(self) -> str:
        width = max((len(edge.source) for edge in self.edges), default=0)
        lines = []
        for edge in self.edges:
            status = edge.status()
            lines.append(f"{edge.source.rjust(width)} --[ {edge.label()} ]--> {edge.target}"
                         + (f"  ({status})" if status else ""))
        alone = [node for node in self.nodes if not any(node in (edge.source, edge.target) for edge in self.edges)]
        lines.extend(f"{node.rjust(width)}  (no flow)" for node in alone)
        return "\n".join(lines) + "\n"

    def _mermaid(self) -> str:
        ids = {node: f"c{index}_{re.sub(r'[^A-Za-z0-9_]', '_', node)}" for index, node in enumerate(self.nodes)}
        lines = ["flowchart LR"]
        lines.extend(f'  {ids[node]}[("{_mermaid_text(node)}")]' for node in self.nodes)
        for edge in self.edges:
            status = edge.status()
            label = _mermaid_text(edge.label() + (f" ({status})" if status else ""))
            lines.append(f'  {ids[edge.source]} -->|"{label}"| {ids[edge.target]}')
        return "\n".join(lines) + "\n"

    def _dot(self) -> str:
        lines = ["digraph kmc {", "  rankdir=LR;", '  node [shape=cylinder];']
        lines.extend(f"  {_dot_text(node)};" for node in self.nodes)
        for edge in self.edges:
            status = edge.status()
            label = edge.label() + (f"\n{status}" if status else "")
            lines.append(f"  {_dot_text(edge.source)} -> {_dot_text(edge.target)} [label={_dot_text(label)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("|", "#124;")


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def flow_graph(flows: Sequence[Flow], status_rows: Sequence[Mapping[str, Any]] = ()) -> FlowGraph:
    """The graph of ``flows``: every cluster they name (in order of appearance), an edge per flow and source.
    ``status_rows`` (kmc flow status rows) put each edge's records and seconds behind on it."""
    nodes: list[str] = []
    for flow in flows:
        for name in (*flow.sources, flow.target):
            if name not in nodes:
                nodes.append(name)
    behind: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in status_rows:
        behind.setdefault((row["flow"], row["source"]), []).append(row)
    edges = []
    for flow in flows:
        for source in flow.sources:
            rows = behind.get((flow.name, source))
            records = seconds = error = None
            if rows:
                error = next((row["error"] for row in rows if row.get("error")), None)
                if error is None:
                    records = sum(row["records_behind"] or 0 for row in rows)
                    waits = [row["seconds_behind"] for row in rows if row["seconds_behind"] is not None]
                    seconds = max(waits) if waits else None
            edges.append(Edge(flow.name, source, flow.target, flow.topics, flow.exclude, flow.rename, records,
                              seconds, error))
    return FlowGraph(nodes, edges)
