"""Compare the topics of two clusters: which exist, their partitions, replication, configs and record
counts, and (on request) their content, record by record, streamed with bounded memory.

    report = diff_clusters(source, target, DiffOptions(topics=("orders",), data=True), timeout=10)
    report.equal, report.to_dict(), report.rows()

:mod:`kmc.diff.model` holds the options and the report, :mod:`kmc.diff.compare` the pure comparisons,
:mod:`kmc.diff.stream` the reading of content in reader processes, :mod:`kmc.diff.clusters` the
operation. Library code: no printing.
"""

from kmc.diff.clusters import diff_clusters, validate_options
from kmc.diff.compare import (
    KMC_HEADER_PREFIX,
    RECORD_FIELDS,
    TopicMapping,
    compare_configs,
    compare_sequences,
    compare_topic,
    content_headers,
    differing_fields,
    map_topics,
    partition_records,
    record_digest,
    reverse_topic_name,
)
from kmc.diff.model import (
    KINDS,
    ConfigSelection,
    Difference,
    DiffOptions,
    DiffReport,
    FirstDifference,
    SequenceComparison,
    TopicComparison,
)
from kmc.diff.stream import (
    READER_SETTINGS,
    ClusterSide,
    DataProgress,
    PartitionJob,
    compare_partitions,
    read_partition,
)

__all__ = [
    "KINDS",
    "KMC_HEADER_PREFIX",
    "READER_SETTINGS",
    "RECORD_FIELDS",
    "ClusterSide",
    "ConfigSelection",
    "DataProgress",
    "DiffOptions",
    "DiffReport",
    "Difference",
    "FirstDifference",
    "PartitionJob",
    "SequenceComparison",
    "TopicComparison",
    "TopicMapping",
    "compare_configs",
    "compare_partitions",
    "compare_sequences",
    "compare_topic",
    "content_headers",
    "diff_clusters",
    "differing_fields",
    "map_topics",
    "partition_records",
    "read_partition",
    "record_digest",
    "reverse_topic_name",
    "validate_options",
]
