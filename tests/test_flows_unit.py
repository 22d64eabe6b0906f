"""Flows without brokers: pattern analysis, the static flow checks (through the CLI too), job order,
merge conflicts, how failures combine, and the usage and config errors of aggregate and flow."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import pytest

from kmc.errors import ConfigError, ExitCode, LockedError, PartialFailure, UnreachableError, UsageError
from kmc.flows import aggregate_jobs, check_flows, flow_spec, pattern_strings
from kmc.mirror import MirrorSpec, lock_identity
from kmc.mirror.jobs import MirrorJob, job_waves
from kmc.mirror.preflight import merge_conflicts
from kmc.mirror.runner import JobOutcome, RunReport
from kmc.profiles import Cluster, adhoc_cluster, load_config
from tests.helpers import kmc

CLUSTERS = """
[clusters.dc1]
bootstrap = ["127.0.0.1:1"]
[clusters.dc2]
bootstrap = ["127.0.0.1:2"]
[clusters.central]
bootstrap = ["127.0.0.1:3"]
[clusters.dr]
bootstrap = ["127.0.0.1:4"]
"""


def config_file(tmp_path: Path, flows: str) -> Path:
    path = tmp_path / "flows.toml"
    path.write_text(CLUSTERS + textwrap.dedent(flows))
    return path


def static_errors(tmp_path: Path, flows: str) -> list[str]:
    config = load_config(config_file(tmp_path, flows), include_sandboxes=False)
    return [error.line() for error in check_flows(config, live=False).errors]


# ------------------------------------------------------------------------------------ patterns


@pytest.mark.parametrize(("pattern", "names"), [
    ("orders", ["orders"]),
    ("payments\\.card", ["payments.card"]),
    ("orders|payments", ["orders", "payments"]),
    ("dc[12]\\.orders", ["dc1.orders", "dc2.orders"]),
    ("(eu|us)-(orders|clicks)", ["eu-clicks", "eu-orders", "us-clicks", "us-orders"]),
    ("^orders$", ["orders"]),
    ("orders.*", None),
    ("dc[0-9]+\\..*", None),
    ("[^x]", None),
])
def test_literal_patterns_are_expanded_and_open_ones_are_not(pattern: str, names: list[str] | None) -> None:
    assert pattern_strings(pattern, exact=True) == names


@pytest.mark.parametrize("pattern", [".*", "payments\\..*", "dc[0-9]+\\.orders", "a+b?", "[^_].*", "\\w+-\\d"])
def test_open_patterns_give_examples_they_match(pattern: str) -> None:
    import re

    examples = pattern_strings(pattern, exact=False)
    assert examples
    assert all(re.fullmatch(pattern, example) for example in examples)


# ------------------------------------------------------------------------------------ flow check (static)


def test_unknown_clusters_name_the_flow_and_key(tmp_path: Path) -> None:
    errors = static_errors(tmp_path, """
        [flows.agg]
        from = ["dc1", "dc9"]
        to = "centrl"
    """)
    assert len(errors) == 2
    assert errors[0].startswith("flows.agg.to: unknown cluster 'centrl'")
    assert errors[1].startswith("flows.agg.from: unknown cluster 'dc9'")


def test_two_flows_writing_the_same_literal_topic_collide(tmp_path: Path) -> None:
    errors = static_errors(tmp_path, """
        [flows.a]
        from = ["dc1"]
        to = "central"
        topics = ["orders|payments"]
        [flows.b]
        from = ["dc2"]
        to = "central"
        topics = ["orders"]
    """)
    assert errors == ["flows.a.topics, flows.b.topics: both write central/orders (a from dc1 'orders'; "
                      "b from dc2 'orders')"]


def test_an_open_pattern_of_the_same_source_collides_with_a_literal(tmp_path: Path) -> None:
    errors = static_errors(tmp_path, """
        [flows.orders-only]
        from = ["dc1"]
        to = "central"
        topics = ["orders"]
        [flows.everything]
        from = ["dc1"]
        to = "central"
    """)
    assert len(errors) == 1
    assert errors[0].startswith("flows.everything.topics, flows.orders-only.topics: both write central/orders")


def test_different_renames_or_targets_do_not_collide(tmp_path: Path) -> None:
    assert static_errors(tmp_path, """
        [flows.a]
        from = ["dc1", "dc2"]
        to = "central"
        topics = ["orders"]
        rename = "{source}.{topic}"
        [flows.b]
        from = ["dc1"]
        to = "dr"
        topics = ["orders"]
        [flows.merged]
        from = ["dc1", "dc2"]
        to = "central"
        topics = ["payments"]
    """) == []


def test_prefix_mode_sources_colliding_by_name(tmp_path: Path) -> None:
    path = tmp_path / "flows.toml"
    path.write_text(textwrap.dedent("""
        [clusters.x]
        bootstrap = ["127.0.0.1:1"]
        [clusters."x.y"]
        bootstrap = ["127.0.0.1:2"]
        [clusters.central]
        bootstrap = ["127.0.0.1:3"]
        [flows.agg]
        from = ["x", "x.y"]
        to = "central"
        topics = ["y\\\\.orders", "orders"]
        rename = "{source}.{topic}"
    """))
    errors = [error.line() for error in check_flows(load_config(path, include_sandboxes=False), live=False).errors]
    assert errors == ["flows.agg.rename: two sources write central/x.y.orders (agg from x 'y.orders'; "
                      "agg from x.y 'orders')"]


def test_identity_cycles_are_fine_because_of_provenance(tmp_path: Path) -> None:
    assert static_errors(tmp_path, """
        [flows.there]
        from = ["dc1"]
        to = "dc2"
        [flows.back]
        from = ["dc2"]
        to = "dc1"
    """) == []


def test_a_cycle_whose_renames_keep_matching_creates_topics_without_end(tmp_path: Path) -> None:
    errors = static_errors(tmp_path, """
        [flows.up]
        from = ["dc1"]
        to = "central"
        rename = "{source}.{topic}"
        [flows.down]
        from = ["central"]
        to = "dc1"
        topics = ["dc1\\\\..*"]
    """)
    assert len(errors) == 1
    assert errors[0].startswith("flows.up.rename, flows.down.rename: the cycle dc1 -> central -> dc1 creates "
                                "topics without end (x -> dc1.x -> dc1.x -> dc1.dc1.x -> ...)")


def test_a_cycle_broken_by_renaming_is_fine(tmp_path: Path) -> None:
    assert static_errors(tmp_path, """
        [flows.up]
        from = ["dc1"]
        to = "central"
        topics = ["orders"]
        rename = "{source}.{topic}"
        [flows.down]
        from = ["central"]
        to = "dc1"
        topics = ["orders"]
    """) == []


def test_a_flow_into_its_own_source(tmp_path: Path) -> None:
    errors = static_errors(tmp_path, """
        [flows.self]
        from = ["dc1"]
        to = "dc1"
        [flows.copies]
        from = ["dc2"]
        to = "dc2"
        rename = "copy.{topic}"
    """)
    assert errors[0] == ("flows.self.rename: dc1 is also the target: an identity rename would copy its topics "
                         "onto themselves")
    assert errors[1].startswith("flows.copies.rename: the cycle dc2 -> dc2 creates topics without end "
                                "(x -> copy.x -> copy.copy.x")
    assert len(errors) == 2


def test_unsupported_settings_are_errors(tmp_path: Path) -> None:
    errors = static_errors(tmp_path, """
        [flows.eos]
        from = ["dc1"]
        to = "central"
        exactly_once = true
        sync_groups = ["billing-.*"]

        [flows.keyed]
        from = ["dc1", "dc2"]
        to = "central"
        rename = "{topic}"
        partitioner = "key"
        sync_groups = ["billing-.*"]

        [flows.merged]
        from = ["dc1", "dc2"]
        to = "dr"
        rename = "{topic}"
        sync_groups = ["billing-.*"]
    """)
    # exactly-once and group sync are supported (tests/test_exactly_once.py, tests/test_failover.py), but
    # groups cannot be translated through a rehash by key, nor from several sources into one topic
    assert [error.split(":")[0] for error in errors] == ["flows.keyed.sync_groups", "flows.merged.sync_groups"]


# ------------------------------------------------------------------------------------ flow check (CLI)


def test_flow_check_lists_every_error_then_exits_3(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.a]
        from = ["dc1", "nowhere"]
        to = "central"
        topics = ["orders"]
        [flows.b]
        from = ["dc2"]
        to = "central"
        topics = ["orders"]
    """)
    result = kmc("flow", "check", "--offline", "--config", path, expect=3)
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("kmc: error: flows.a.from: unknown cluster 'nowhere' (known: ")  # and sandboxes
    assert lines[1:] == [
        "kmc: error: flows.a.topics, flows.b.topics: both write central/orders (a from dc1 'orders'; "
        "b from dc2 'orders')",
        f"kmc: error: 2 error(s) in the flows of {path}",
    ]
    document = kmc("flow", "check", "--offline", "--config", path, "-o", "json", expect=3).json()
    assert set(document) == {"ok", "flows", "errors", "warnings", "live_clusters", "copy_modes"}
    assert document["ok"] is False and document["flows"] == ["a", "b"]
    assert set(document["errors"][0]) == {"flows", "key", "message", "line"}
    assert document["errors"][1]["flows"] == ["a", "b"] and document["errors"][1]["key"] == "topics"
    rows = [json.loads(line) for line in kmc("flow", "check", "--offline", "--config", path, "-o", "ndjson",
                                             expect=3).stdout.splitlines()]
    assert rows == document["errors"]
    table = list(csv.reader(io.StringIO(kmc("flow", "check", "--offline", "--config", path, "-o", "csv",
                                            expect=3).stdout)))
    assert table[0] == ["flows", "key", "message", "line"] and [row[:2] for row in table[1:]] == [
        ["a", "from"], ["a b", "topics"]]


def test_flow_check_clean_exits_0(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.aggregate]
        from = ["dc1", "dc2"]
        to = "central"
        rename = "{source}.{topic}"
        [flows.fanout]
        from = ["central"]
        to = "dr"
    """)
    result = kmc("flow", "check", "--offline", "--config", path)
    whole = "copy mode whole: batches of the source's own producers travel whole; copies other mirrors wrote " \
            "into the source are walked and stamped with their origin"
    assert result.stderr == f"flow aggregate: {whole}\nflow fanout: {whole}\n2 flow(s) checked, no errors\n"
    assert kmc("flow", "check", "--offline", "--config", path, "-o", "csv").stdout == "flows,key,message,line\n"
    assert kmc("flow", "check", "--offline", "--config", path, "-o", "ndjson").stdout == ""


def test_a_bad_regex_is_a_config_error_naming_the_flow_and_key(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.agg]
        from = ["dc1"]
        to = "central"
        topics = ["orders", "pay(ments"]
    """)
    result = kmc("flow", "check", "--offline", "--config", path, expect=3)
    assert result.stderr.startswith(f"kmc: error: {path}: flows.agg.topics: bad regex 'pay(ments'")


# ------------------------------------------------------------------------------------ flow list, run: errors


def test_flow_list_json_keys(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.agg]
        from = ["dc1", "dc2"]
        to = "central"
        topics = ["orders"]
        rename = "{source}.{topic}"
    """)
    rows = kmc("flow", "list", "--config", path, "-o", "json").json()
    assert rows == [{"name": "agg", "from": ["dc1", "dc2"], "to": "central", "topics": ["orders"], "exclude": [],
                     "rename": "{source}.{topic}", "sync_configs": False, "sync_groups": [], "exactly_once": False,
                     "partitioner": "same", "sync_acls": False, "group": None}]


def test_flow_run_errors(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.agg]
        from = ["dc1", "dc3"]
        to = "central"
    """)
    assert "name the flows to run, or give --all" in kmc("flow", "run", "--config", path, expect=2).stderr
    assert "unknown flow 'nope' (known: agg)" in kmc("flow", "run", "nope", "--config", path, expect=2).stderr
    assert kmc("flow", "run", "agg", "--config", path, expect=3).stderr.startswith(
        "kmc: error: flows.agg.from: unknown cluster 'dc3'")
    assert "give --once or --follow" in kmc("flow", "run", "agg", "--once", "--follow", "--config", path,
                                            expect=2).stderr


# ------------------------------------------------------------------------------------ aggregate: usage


def _cluster(name: str, port: int) -> Cluster:
    return Cluster(name=name, bootstrap=(f"127.0.0.1:{port}",))


def test_aggregate_refuses_what_cannot_work() -> None:
    dc1, central = _cluster("dc1", 1), _cluster("central", 3)
    spec = MirrorSpec(rename="{source}.{topic}")
    with pytest.raises(UsageError, match="dc1 is given twice"):
        aggregate_jobs([dc1, dc1], central, spec)
    with pytest.raises(UsageError, match="dc1 and other are the same cluster"):
        aggregate_jobs([dc1, _cluster("other", 1)], central, spec)
    with pytest.raises(UsageError, match="central is both a source and the target"):
        aggregate_jobs([dc1, central], central, spec)
    with pytest.raises(UsageError, match="cannot use 127.0.0.1:9 as {source}"):
        aggregate_jobs([dc1, adhoc_cluster("127.0.0.1:9")], central, spec)
    jobs = aggregate_jobs([dc1, adhoc_cluster("127.0.0.1:9")], central, MirrorSpec(rename="{topic}"))
    assert [job.label for job in jobs] == ["dc1 -> central", "127.0.0.1:9 -> central"]


@pytest.mark.parametrize(("args", "message"), [
    (["--merge", "--rename", "{topic}.x"], "give --merge or --rename, not both"),
    (["--partitioner", "random"], "--partitioner: 'random' is not 'same' or 'key'"),
    (["--rename", "{nope}"], "unknown placeholder"),
    (["--once", "--follow"], "give --once or --follow, not both"),
])
def test_aggregate_usage_errors(args: list[str], message: str) -> None:
    result = kmc("aggregate", "127.0.0.1:1", "127.0.0.1:2", "--into", "127.0.0.1:3", *args, expect=2)
    assert message in result.stderr


def test_the_default_flow_shares_kmc_mirrors_lock() -> None:
    """aggregate's default flow name is kmc mirror's, so the same source and options are the same lock."""
    dc1, central = _cluster("dc1", 1), _cluster("central", 3)
    job = aggregate_jobs([dc1], central, MirrorSpec(topics=("orders",), rename="{source}.{topic}"))[0]
    mirror_spec = MirrorSpec(topics=("orders",), rename="{source}.{topic}")  # what `kmc mirror` builds
    assert (lock_identity(job.source, job.target, job.spec.topics, job.spec.exclude, job.spec.rename, job.spec.flow)
            == lock_identity(dc1, central, mirror_spec.topics, mirror_spec.exclude, mirror_spec.rename,
                             mirror_spec.flow))


def test_a_flow_selecting_everything_is_the_empty_selection(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, """
        [flows.all]
        from = ["dc1"]
        to = "central"
    """), include_sandboxes=False)
    spec = flow_spec(config.flows["all"], compression=None)
    assert spec.topics == () and spec.flow == "all" and spec.compression is None


# ------------------------------------------------------------------------------------ merging, order, failures


def test_merge_conflicts() -> None:
    listing = {"dc1": {"orders": 6, "clicks": 4}, "dc2": {"orders": 3, "clicks": 4}}
    conflicts = merge_conflicts(listing, "{topic}")
    assert [conflict.describe() for conflict in conflicts] == [
        "orders has differing partition counts: 6 in dc1, 3 in dc2"]
    assert merge_conflicts(listing, "{topic}", partitioner="key") == []
    assert merge_conflicts(listing, "{source}.{topic}") == []
    clash = merge_conflicts({"x": {"y.orders": 1}, "x.y": {"orders": 1}}, "{source}.{topic}")
    assert [conflict.describe() for conflict in clash] == ["x 'y.orders' and x.y 'orders' would both be written "
                                                           "to x.y.orders"]


def test_once_runs_feeding_mirrors_first() -> None:
    dc1, dc2, central, dr, other = (_cluster(name, port) for port, name in
                                    enumerate(["dc1", "dc2", "central", "dr", "other"], start=1))
    spec = MirrorSpec()
    fanout = MirrorJob(central, dr, spec)
    into_central = [MirrorJob(dc1, central, spec), MirrorJob(dc2, central, spec)]
    unrelated = MirrorJob(dc1, other, spec)
    waves = job_waves([fanout, *into_central, unrelated])
    assert waves == [[*into_central, unrelated], [fanout]]
    there, back = MirrorJob(dc1, dc2, spec), MirrorJob(dc2, dc1, spec)
    assert job_waves([there, back]) == [[there, back]]  # a cycle runs together


def test_failures_combine_naming_each_mirror() -> None:
    dc1, dc2, central = _cluster("dc1", 1), _cluster("dc2", 2), _cluster("central", 3)
    ok = JobOutcome(MirrorJob(dc1, central, MirrorSpec()), result=object())  # type: ignore[arg-type]
    down = JobOutcome(MirrorJob(dc2, central, MirrorSpec()), error=UnreachableError("dc2: cannot reach 127.0.0.1:2"))
    assert RunReport("follow", [ok]).failure() is None
    partial = RunReport("follow", [ok, down]).failure()
    assert isinstance(partial, PartialFailure) and partial.exit_code == ExitCode.PARTIAL == 6
    assert partial.message == "1 of 2 mirrors failed: dc2 -> central: dc2: cannot reach 127.0.0.1:2"
    assert RunReport("follow", [down]).failure() is down.error
    locked = [JobOutcome(MirrorJob(cluster, central, MirrorSpec(flow="agg")), error=LockedError("held"))
              for cluster in (dc1, dc2)]
    both = RunReport("follow", locked).failure()
    assert isinstance(both, LockedError) and both.exit_code == 75
    assert both.message == "all 2 mirrors failed: agg: dc1 -> central: held; agg: dc2 -> central: held"


def test_an_unsupported_flow_setting_stops_flow_run(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.groups]
        from = ["dc1"]
        to = "central"
        partitioner = "key"
        sync_groups = ["billing-.*"]
    """)
    assert kmc("flow", "run", "groups", "--config", path, expect=3).stderr.startswith(
        "kmc: error: flows.groups.sync_groups: consumer group offsets cannot be translated through partitioner")
    assert issubclass(ConfigError, Exception)


def test_a_flows_group_is_a_name_and_reaches_its_spec(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
        [flows.agg]
        from = ["dc1"]
        to = "central"
        group = "shared"
    """)
    flow = load_config(path, include_sandboxes=False).flows["agg"]
    assert flow.group == "shared" and flow_spec(flow).group == "shared"
    assert flow_spec(flow, group="other").group == "other"  # --group on the command line wins
    bad = config_file(tmp_path, """
        [flows.agg]
        from = ["dc1"]
        to = "central"
        group = "no spaces"
    """)
    error = kmc("flow", "list", "--config", bad, expect=3).stderr
    assert "flows.agg.group: invalid group name 'no spaces'" in error
