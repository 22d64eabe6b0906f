"""Running kmc as a service (kmc/service/, docs/operations.md): a real Prometheus server scrapes a running
``kmc flow run --follow``; lag rises while the mirror processes are paused (SIGSTOP) and /healthz turns 503,
both come back after SIGCONT; JSON log lines carry their keys. Prometheus is Debian's ``prometheus`` package
(.ci/run installs it); without it the test says so and skips."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmc.service.logs import KEYS
from tests.helpers import count, create_topic, kmc, numbered, produce, wait_for

STALL_TIMEOUT = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a local test URL
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """A Prometheus server scraping ``target`` every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus server is not installed (Debian's prometheus package; .ci/run installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                      f"  - job_name: kmc\n    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/-/ready"), 60, "prometheus to start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        return http_get(url)[0] == 200
    return False


def query(prometheus_url: str, promql: str) -> float | None:
    """The value of an instant PromQL query through Prometheus' HTTP API (the sum of the series; None when
    it has none)."""
    status, body = http_get(f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert status == 200, body
    result = json.loads(body)["data"]["result"]
    return sum(float(series["value"][1]) for series in result) if result else None


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(line) for line in out.split()]


@pytest.mark.kafka
def test_prometheus_scrapes_a_flow_and_sees_lag_rise_while_paused_and_health_turn_503(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str, followers, tmp_path: Path, monkeypatch) -> None:
    create_topic(src_cluster, topic_name, partitions=3)
    produce(src_cluster, topic_name, numbered(300, 3))
    metrics_port = free_port()
    config = tmp_path / "config.toml"
    # two sources, so each mirror runs in a process of its own (the service stays in the parent): src, and
    # dst itself, which has no such topic and copies nothing
    config.write_text(f'[flows.svc]\nfrom = ["src", "dst"]\nto = "dst"\ntopics = ["{topic_name}"]\n'
                      f'rename = "{{source}}.{{topic}}"\nmetrics_addr = "127.0.0.1:{metrics_port}"\n\n'
                      f"[service]\nstall_timeout = {STALL_TIMEOUT}\n")
    monkeypatch.setenv("KMC_CONFIG", str(config))
    target_topic = f"src.{topic_name}"
    flow = followers("svc", "--log-format", "json", command=("flow", "run"))
    endpoint = f"http://127.0.0.1:{metrics_port}"
    copied = f'kmc_records_copied_total{{flow="svc",source="src",topic="{topic_name}"}}'
    behind = f'kmc_records_behind{{flow="svc",source="src",topic="{topic_name}"}}'
    waiting = f'kmc_seconds_behind{{flow="svc",source="src",topic="{topic_name}"}}'
    paused: list[int] = []
    with prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as server:
        try:
            wait_for(lambda: query(server, copied) == 300, 90, "Prometheus to see 300 records copied", flow)
            assert count(dst_cluster, target_topic) == 300
            wait_for(lambda: query(server, behind) == 0, 30, "no lag", flow)
            assert http_get(f"{endpoint}/healthz")[0] == 200

            paused = children(flow.proc.pid)
            assert len(paused) == 2, "each source's mirror in a process of its own"
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            produce(src_cluster, topic_name, numbered(200, 3, start=300))
            wait_for(lambda: (query(server, behind) or 0) >= 200, 60, "the lag to rise while paused", flow)
            first = query(server, waiting) or 0
            wait_for(lambda: http_get(f"{endpoint}/healthz")[0] == 503, 60, "/healthz to say 503", flow)
            status, body = http_get(f"{endpoint}/healthz")
            stalled = json.loads(body)["stalled"]
            assert status == 503 and {entry["topic"] for entry in stalled} == {topic_name}
            assert all(entry["checkpoint_age_seconds"] >= STALL_TIMEOUT for entry in stalled)  # rounded to 0.1 s
            wait_for(lambda: (query(server, waiting) or 0) > first, 30, "seconds behind to grow", flow)
            wait_for(lambda: query(server, "kmc_healthy") == 0, 30, "kmc_healthy to say 0", flow)

            for pid in paused:
                os.kill(pid, signal.SIGCONT)
            paused = []
            wait_for(lambda: query(server, behind) == 0, 60, "the lag to fall after SIGCONT", flow)
            wait_for(lambda: http_get(f"{endpoint}/healthz")[0] == 200, 30, "/healthz to say 200 again", flow)
            wait_for(lambda: query(server, copied) == 500, 30, "Prometheus to see 500 records copied", flow)
            assert count(dst_cluster, target_topic) == 500
            assert (query(server, 'sum(kmc_send_latency_seconds_count{flow="svc"})') or 0) > 0
            assert (query(server, 'sum(kmc_fetch_latency_seconds_count{flow="svc"})') or 0) > 0
            assert query(server, 'process_resident_memory_bytes{job="kmc"}')
        finally:
            for pid in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
    assert flow.stop() == 0, flow.stderr
    lines = [json.loads(line) for line in flow.stderr.splitlines()]
    assert lines and all(tuple(line)[:len(KEYS)] == KEYS for line in lines)
    events = {line["event"] for line in lines}
    assert "service-started" in events
    assert any(line["flow"] == "svc" and line["source"] == "src" and line["target"] == "dst" for line in lines)


def test_json_log_lines_carry_their_keys_even_for_a_usage_error() -> None:
    result = kmc("--log-format", "json", "mirror", "a:1", "b:2", "--metrics-addr", "127.0.0.1:1", expect=2)
    line = json.loads(result.stderr)
    assert tuple(line) == KEYS
    assert line["level"] == "error" and line["event"] == "exit" and "--metrics-addr needs --follow" in line["message"]


@pytest.mark.parametrize("address", ["9464", "host:", "::1:9464", "h:70000"])
def test_a_bad_metrics_address_is_a_usage_error(address: str) -> None:
    result = kmc("mirror", "a:1", "b:2", "--follow", "--metrics-addr", address, expect=2)
    assert "is not HOST:PORT" in result.stderr and result.stderr.count("\n") == 1
