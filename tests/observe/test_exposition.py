"""The pieces of the exposition: per-process files of batch histograms summed at scrape,
a process's own metrics endpoint, and prometheus-client reached by its public API only."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Metric
from prometheus_client.registry import Collector

from headwater.errors import AuthenticationError, PermissionDeniedError
from headwater.metrics import REGISTRY
from headwater.metrics.exposition import MetricsEndpoint, fresh_multiprocess_dir, scrape_registry
from headwater.metrics.histogram import BatchHistogram, BatchHistogramFiles

BUCKETS = (0.1, 1.0)
SRC = Path(__file__).resolve().parents[2] / "src" / "headwater"


def _samples(collector: Collector) -> dict[tuple[str, str, str], float]:
    return {
        (s.name, s.labels.get("kind", ""), s.labels.get("le", "")): s.value
        for family in collector.collect()
        for s in family.samples
    }


def _histogram(directory: Path) -> BatchHistogram:
    return BatchHistogram("hw_test_seconds", "test", ["kind"], BUCKETS, directory=directory)


def test_files_of_several_processes_are_summed(tmp_path: Path) -> None:
    first, second = _histogram(tmp_path), _histogram(tmp_path)  # two processes' totals
    first.observe_counts(("a",), [2, 1, 0], [0.1, 0.5, 0.0])
    second.observe_counts(("a",), [0, 0, 3], [0.0, 0.0, 9.0])
    second.observe_counts(("b",), [1, 0, 0], [0.05, 0.0, 0.0])
    first.observe(0.7, ("a",))
    assert len(list(tmp_path.glob("batch_histogram_hw_test_seconds_*.hist"))) == 2
    got = _samples(BatchHistogramFiles(tmp_path))
    assert got[("hw_test_seconds_bucket", "a", "0.1")] == 2
    assert got[("hw_test_seconds_bucket", "a", "1.0")] == 4
    assert got[("hw_test_seconds_bucket", "a", "+Inf")] == 7
    assert got[("hw_test_seconds_count", "a", "")] == 7
    assert math.isclose(got[("hw_test_seconds_sum", "a", "")], 0.1 + 0.5 + 9.0 + 0.7)
    assert got[("hw_test_seconds_count", "b", "")] == 1


def test_a_process_started_again_adds_to_the_totals_of_the_one_before(tmp_path: Path) -> None:
    before = _histogram(tmp_path)
    before.observe_counts(("a",), [5, 0, 0], [0.2, 0.0, 0.0])
    after = _histogram(tmp_path)  # same pid in this test: the file is its own all the same
    after.observe_counts(("a",), [1, 0, 0], [0.01, 0.0, 0.0])
    assert _samples(BatchHistogramFiles(tmp_path))[("hw_test_seconds_count", "a", "")] == 6


def test_a_forked_process_writes_its_own_file_and_not_its_parents_totals(
    tmp_path: Path,
) -> None:
    h = _histogram(tmp_path)
    h.observe_counts(("a",), [3, 0, 0], [0.1, 0.0, 0.0])
    pid = os.fork()
    if pid == 0:  # the child: one observation of its own, then gone
        try:
            h.observe(0.5, ("a",))
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(list(tmp_path.glob("batch_histogram_*.hist"))) == 2
    assert _samples(BatchHistogramFiles(tmp_path))[("hw_test_seconds_count", "a", "")] == 4


def test_a_file_with_other_buckets_torn_or_unreadable_is_skipped(tmp_path: Path) -> None:
    _histogram(tmp_path).observe(0.5, ("a",))
    (whole,) = (p.read_bytes() for p in tmp_path.glob("batch_histogram_*.hist"))
    BatchHistogram("hw_test_seconds", "test", ["kind"], (0.5,), directory=tmp_path).observe(
        0.2, ("a",)
    )
    (tmp_path / "batch_histogram_hw_test_seconds_1_ab.hist").write_bytes(b"{not framed")
    # Torn: a frame whose bytes do not match their checksum (a write seen half done).
    torn = whole.replace(b'"a"', b'"z"')
    assert torn != whole
    (tmp_path / "batch_histogram_hw_test_seconds_2_cd.hist").write_bytes(torn)
    got = _samples(BatchHistogramFiles(tmp_path))
    assert got[("hw_test_seconds_count", "a", "")] == 1
    assert ("hw_test_seconds_count", "z", "") not in got


def test_wrong_labels_or_bucket_counts_are_refused() -> None:
    h = BatchHistogram("hw_other_seconds", "test", ["kind"], BUCKETS)
    with pytest.raises(ValueError, match="labels"):
        h.observe_counts((), [1, 0, 0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="buckets"):
        h.observe_counts(("a",), [1, 0], [0.0, 0.0])


def test_one_process_scrapes_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert scrape_registry() is REGISTRY


def test_under_multiprocess_mode_the_scrape_reads_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = fresh_multiprocess_dir(tmp_path / "mp")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    _histogram(directory).observe(0.05, ("a",))
    at_scrape = CollectorRegistry()
    Counter("hw_read_at_scrape", "read when scraped", registry=at_scrape).inc(3)

    class ReadAtScrape(Collector):
        def collect(self) -> Iterable[Metric]:
            return at_scrape.collect()

    registry = scrape_registry(ReadAtScrape())
    assert registry is not REGISTRY
    names = {s.name: s.value for family in registry.collect() for s in family.samples}
    assert names["hw_test_seconds_count"] == 1
    assert names["hw_read_at_scrape_total"] == 3
    assert "headwater_events_accepted_total" not in names  # this process is not in the files


def test_the_endpoint_answers_operators_only(tmp_path: Path) -> None:
    def authorize(secret: str | None) -> None:
        if secret is None or secret not in ("op", "web"):
            raise AuthenticationError("unknown API key")
        if secret != "op":
            raise PermissionDeniedError("this needs the role operator")

    registry = CollectorRegistry()
    Counter("hw_endpoint_probe", "probe", registry=registry).inc(2)
    endpoint = MetricsEndpoint(authorize, port=0, registry=registry)
    url = f"http://127.0.0.1:{endpoint.port}"
    try:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Basic op"}).status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer x"}).status_code == 401
        denied = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer web"})
        assert denied.status_code == 403
        assert httpx.get(f"{url}/", headers={"Authorization": "Bearer op"}).status_code == 404
        ok = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer op"})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")
        assert "hw_endpoint_probe_total 2.0" in ok.text
    finally:
        endpoint.close()


def test_prometheus_client_is_used_through_its_public_api_only() -> None:
    # Its metrics' private attributes change between releases and, under multiprocess
    # mode, are files of their own: a module that records metrics never reaches for them.
    private = re.compile(
        r"""\._(buckets|sum|count|upper_bounds|value|metrics|labelvalues|created)\b"""
        r"""|getattr\([^)]*["']_|values\.ValueClass"""
    )
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if re.search(r"prometheus_client|headwater\.metrics", text := path.read_text("utf-8"))
        for n, line in enumerate(text.splitlines(), 1)
        if private.search(line)
    ]
    assert not found, found
