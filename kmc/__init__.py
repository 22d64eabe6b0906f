"""kmc: cross-cluster Apache Kafka data operations."""

__version__ = "0.1.0"
