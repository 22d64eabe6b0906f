"""Fast tests of diff's pure logic: topic mapping, config and sequence comparison, record digests."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from kmc.diff import (
    KINDS,
    ConfigSelection,
    Difference,
    DiffOptions,
    DiffReport,
    FirstDifference,
    SequenceComparison,
    compare_configs,
    compare_sequences,
    compare_topic,
    differing_fields,
    map_topics,
    record_digest,
    reverse_topic_name,
    validate_options,
)
from kmc.errors import UsageError
from kmc.metadata import PartitionInfo, TopicInfo
from tests.helpers import kmc

# --- record digests ---------------------------------------------------------------------------


def digest(key=b"k", value=b"v", headers=(), timestamp=1):  # noqa: ANN001, ANN201 - test shorthand
    return record_digest(key, value, list(headers), timestamp)


def test_digest_is_stable_and_short() -> None:
    assert digest() == digest()
    assert len(digest()) == 16


@pytest.mark.parametrize(("left", "right"), [
    ({"key": None}, {"key": b""}),
    ({"value": None}, {"value": b""}),
    ({"key": b"ab", "value": b"c"}, {"key": b"a", "value": b"bc"}),
    ({"value": b"v"}, {"value": b"w"}),
    ({"timestamp": 1}, {"timestamp": 2}),
    ({"headers": [("h", b"1")]}, {"headers": [("h", b"2")]}),
    ({"headers": [("h", None)]}, {"headers": [("h", b"")]}),
    ({"headers": [("ab", b"c")]}, {"headers": [("a", b"bc")]}),
    ({"headers": [("a", b"1"), ("b", b"2")]}, {"headers": [("b", b"2"), ("a", b"1")]}),
    ({"headers": [("a", b"1")]}, {"headers": [("a", b"1"), ("a", b"1")]}),
    ({"headers": []}, {"headers": [("x-origin", b"1")]}),
])
def test_digest_tells_apart(left: dict, right: dict) -> None:
    assert digest(**left) != digest(**right)


def test_digest_ignores_kmc_headers_only() -> None:
    plain = digest(headers=[("h", b"1")])
    assert digest(headers=[("kmc-origin", b"cluster-a"), ("h", b"1")]) == plain
    assert digest(headers=[("h", b"1"), ("kmc-origin", b"cluster-b")]) == plain
    assert digest(headers=[("kmc.origin", b"x"), ("h", b"1")]) != plain


def test_differing_fields_names_each_field() -> None:
    def record(**fields):  # noqa: ANN003, ANN202
        base = {"key": b"k", "value": b"v", "headers": [("h", b"1")], "timestamp": 5}
        base.update(fields)
        return SimpleNamespace(**base)

    assert differing_fields(record(), record()) == ()
    assert differing_fields(record(), record(headers=[("h", b"2")])) == ("headers",)
    assert differing_fields(record(), record(headers=[("h", b"1"), ("kmc-origin", b"x")])) == ()
    assert differing_fields(record(), record(key=None, timestamp=6)) == ("key", "timestamp")


# --- lock-step sequence comparison ------------------------------------------------------------


def seq(*digests: str, first_offset: int = 0) -> list[tuple[int, bytes]]:
    return [(first_offset + index, value.encode()) for index, value in enumerate(digests)]


def test_equal_sequences() -> None:
    result = compare_sequences(seq("a", "b", "c"), seq("a", "b", "c", first_offset=100))
    assert result == SequenceComparison(3, 3, 0, 0, 0, None)
    assert result.equal


def test_empty_sequences_are_equal() -> None:
    assert compare_sequences([], []).equal


def test_differing_records_report_the_first_position_and_both_offsets() -> None:
    result = compare_sequences(seq("a", "x", "c", "y"), seq("a", "b", "c", "d", first_offset=10))
    assert (result.differing, result.missing, result.extra) == (2, 0, 0)
    assert result.first == FirstDifference(1, 1, 11)


def test_shorter_target_is_missing_records() -> None:
    result = compare_sequences(seq("a", "b", "c"), seq("a"))
    assert (result.source_records, result.target_records) == (3, 1)
    assert (result.differing, result.missing, result.extra) == (0, 2, 0)
    assert result.first == FirstDifference(1, 1, None)


def test_longer_target_has_extra_records() -> None:
    result = compare_sequences(seq("a"), seq("a", "b", first_offset=7))
    assert (result.differing, result.missing, result.extra) == (0, 0, 1)
    assert result.first == FirstDifference(1, None, 8)


def test_empty_source_makes_every_target_record_extra() -> None:
    result = compare_sequences([], seq("a", "b"))
    assert (result.source_records, result.target_records, result.extra) == (0, 2, 2)
    assert result.first == FirstDifference(0, None, 0)


def test_compare_sequences_streams_generators() -> None:
    def generate(count: int, odd: int):  # noqa: ANN202
        for index in range(count):
            yield index, b"odd" if index == odd else b"same"

    result = compare_sequences(generate(100_000, -1), generate(100_000, 99_999))
    assert (result.differing, result.first.index) == (1, 99_999)


# --- topic mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "target", "expected"), [
    ("{topic}", "orders", "orders"),
    ("{source}.{topic}", "dc1.orders", "orders"),
    ("{source}.{topic}", "dc1.a.b", "a.b"),
    ("{source}.{topic}", "dc2.orders", None),
    ("{source}.{topic}", "dc1.", None),
    ("mirror-{topic}-{source}", "mirror-x-y-dc1", "x-y"),
    ("{topic}.{topic}", "a.a", "a"),
    ("{topic}.{topic}", "a.b", None),
    ("a+{topic}", "aa+b", None),
])
def test_reverse_topic_name(template: str, target: str, expected: str | None) -> None:
    assert reverse_topic_name(template, target, "dc1") == expected


def test_map_topics_pairs_missing_and_extra_under_a_rename() -> None:
    mapping = map_topics(["orders", "payments", "skip"], ["dc1.orders", "dc1.refunds", "dc2.orders", "orders"],
                         "{source}.{topic}", "dc1", exclude=[re.compile("skip")])
    assert mapping.pairs == (("orders", "dc1.orders"),)
    assert mapping.missing == (("payments", "dc1.payments"),)
    assert mapping.extra == (("refunds", "dc1.refunds"),)  # dc2.* and unprefixed topics are out of scope


def test_map_topics_include_patterns_apply_to_the_source_name_of_extras() -> None:
    mapping = map_topics(["orders"], ["orders", "other"], "{topic}", "dc1", include=[re.compile("ord.*")])
    assert mapping.pairs == (("orders", "orders"),)
    assert mapping.extra == ()


# --- configs ----------------------------------------------------------------------------------


def test_config_selection_parse() -> None:
    assert ConfigSelection.parse("all") == ConfigSelection("all")
    assert ConfigSelection.parse("NONE") == ConfigSelection("none")
    assert ConfigSelection.parse("retention.ms, cleanup.policy") == ConfigSelection(
        "keys", frozenset({"retention.ms", "cleanup.policy"}))
    with pytest.raises(UsageError):
        ConfigSelection.parse(" , ")


def test_compare_configs_ignores_cluster_specific_keys_unless_named() -> None:
    source = {"retention.ms": "1000", "min.insync.replicas": "2", "cleanup.policy": "delete"}
    target = {"retention.ms": "2000", "min.insync.replicas": "1", "cleanup.policy": "delete"}
    assert compare_configs(source, target, ConfigSelection("all")) == [("retention.ms", "1000", "2000")]
    assert compare_configs(source, target, ConfigSelection("keys", frozenset({"min.insync.replicas"}))) == [
        ("min.insync.replicas", "2", "1")]
    assert compare_configs(source, target, ConfigSelection("none")) == []


def test_compare_configs_an_override_on_one_side_is_a_difference() -> None:
    assert compare_configs({"retention.ms": "1000"}, {}, ConfigSelection()) == [("retention.ms", "1000", None)]


# --- one topic --------------------------------------------------------------------------------


def topic(name: str, partitions: int = 2, rf: int = 1, spans: tuple[int, ...] = (5, 5)) -> TopicInfo:
    replicas = tuple(range(rf))
    return TopicInfo(name, False, tuple(PartitionInfo(p, 0, replicas, replicas) for p in range(partitions)),
                     earliest={p: 10 for p in range(partitions)},
                     latest={p: 10 + spans[p] for p in range(partitions)})


def test_compare_topic_equal() -> None:
    assert compare_topic(topic("a"), topic("b"), {}, {}, DiffOptions()) == []


def test_replication_factor_is_a_difference_only_when_strict() -> None:
    assert compare_topic(topic("a", rf=3), topic("a"), {}, {}, DiffOptions()) == []
    assert compare_topic(topic("a", rf=3), topic("a"), {}, {}, DiffOptions(strict=True)) == [
        Difference("replication_factor", "a", "a", source=3, target=1)]


def test_record_counts_compare_offset_spans_of_common_partitions() -> None:
    found = compare_topic(topic("a", 3, spans=(5, 5, 9)), topic("b", 2, spans=(5, 4)), {}, {}, DiffOptions())
    assert found == [Difference("partitions", "a", "b", source=3, target=2),
                     Difference("records", "a", "b", partition=1, source=5, target=4)]


def test_with_data_counts_come_from_records_read_not_offsets() -> None:
    same = SequenceComparison(3, 3)
    shorter = SequenceComparison(3, 2, 0, 1, 0, FirstDifference(2, 12, None))
    found = compare_topic(topic("a", spans=(5, 5)), topic("a", spans=(9, 9)), {}, {}, DiffOptions(data=True),
                          data={0: same, 1: shorter})
    assert found == [Difference("records", "a", "a", partition=1, source=3, target=2),
                     Difference("data", "a", "a", partition=1, source=3, target=2, data=shorter)]


def test_difference_json_has_one_shape_for_every_kind() -> None:
    keys = ["kind", "topic", "target_topic", "partition", "key", "source", "target", "data"]
    assert list(Difference("config", "a", "b", key="retention.ms", source="1").to_dict()) == keys
    data = Difference("data", "a", "a", partition=0, source=2, target=2,
                      data=SequenceComparison(2, 2, 1, 0, 0, FirstDifference(0, 4, 9, ("value",)))).to_dict()
    assert list(data) == keys
    assert data["data"] == {"differing": 1, "missing": 0, "extra": 0, "first_difference": {
        "index": 0, "source_offset": 4, "target_offset": 9, "fields": ["value"]}}


def test_kinds_are_pinned() -> None:
    assert KINDS == ("missing_topic", "extra_topic", "partitions", "replication_factor", "config", "acl", "records",
                     "data")


def test_report_summary_keys() -> None:
    report = DiffReport("a", "b", DiffOptions()).to_dict()
    assert list(report) == ["source", "target", "rename", "configs", "strict", "data", "acls", "equal", "topics",
                            "differences", "summary"]
    assert list(report["summary"]) == ["topics", "equal_topics", "different_topics", "missing_topics",
                                       "extra_topics", "differences", "records_compared", "bytes_compared",
                                       "seconds"]


def test_validate_options_rejects_bad_patterns_and_templates() -> None:
    with pytest.raises(UsageError, match="--topics"):
        validate_options(DiffOptions(topics=("(",)))
    with pytest.raises(UsageError, match="--exclude"):
        validate_options(DiffOptions(exclude=("[",)))
    with pytest.raises(UsageError, match="must contain"):
        validate_options(DiffOptions(rename="{source}"))
    with pytest.raises(UsageError, match="unknown placeholder"):
        validate_options(DiffOptions(rename="{cluster}.{topic}"))


def test_a_path_without_an_export_is_named_as_such_not_as_an_unknown_cluster(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for side, what in (("missing", "does not exist"), ("empty", "holds no export (no part-NNNNN directory)"),
                       ("file", "is not a directory")):
        result = kmc("diff", str(tmp_path / side), "127.0.0.1:1", expect=2)
        assert result.stderr == (f"kmc: error: {tmp_path / side} {what} (give the directory kmc export wrote "
                                 "(--to DIR), or a cluster name)\n")
    assert "unknown cluster 'nosuch'" in kmc("diff", "127.0.0.1:1", "nosuch", expect=2).stderr
