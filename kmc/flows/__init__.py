"""Several mirrors as one topology: aggregation (fan-in), fan-out and routing by topic pattern.

A named flow (``[flows.NAME]`` in the config) is one mirror job per ``from`` cluster, ``kmc aggregate`` one
job per source (:mod:`kmc.flows.jobs`); :func:`kmc.mirror.runner.run` runs them. :func:`check_flows`
(:mod:`kmc.flows.check`) finds what would go wrong in a config's flows before anything runs;
:func:`flow_status` (:mod:`kmc.flows.status`) says how far behind each flow is, from its checkpoints;
:func:`flow_graph` (:mod:`kmc.flows.graph`) draws them.
Library code: no printing.
"""

from kmc.flows.check import FlowCheck, FlowProblem, check_flows
from kmc.flows.graph import GRAPH_FORMATS, FlowGraph, flow_graph
from kmc.flows.jobs import (
    MERGE_RENAME,
    PREFIX_RENAME,
    aggregate_jobs,
    flow_clusters,
    flow_jobs,
    flow_spec,
    spec_options,
    unsupported_settings,
)
from kmc.flows.patterns import pattern_strings
from kmc.flows.status import STATUS_KEYS, flow_status

__all__ = [
    "GRAPH_FORMATS",
    "MERGE_RENAME",
    "PREFIX_RENAME",
    "STATUS_KEYS",
    "FlowCheck",
    "FlowGraph",
    "FlowProblem",
    "aggregate_jobs",
    "check_flows",
    "flow_clusters",
    "flow_graph",
    "flow_jobs",
    "flow_spec",
    "flow_status",
    "pattern_strings",
    "spec_options",
    "unsupported_settings",
]
