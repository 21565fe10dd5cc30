"""``Reranker.close()`` closes what the Reranker created and nothing you passed in."""

from __future__ import annotations

from cheap_scorers import CrcScorer

from rerank_plugins import Reranker
from rerank_plugins.cache.memory import MemoryCache
from rerank_plugins.telemetry.sinks import EventLog


class ClosableScorer(CrcScorer):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class ClosableCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_objects_passed_in_stay_open(tmp_path):
    scorer, cache, secondary = ClosableScorer(), ClosableCache(), ClosableScorer()
    log = EventLog(tmp_path / "events")
    reranker = Reranker(scorer, cache=cache, event_log=log, secondary_scorer=secondary)
    reranker.rerank("q", ["a", "b"])
    reranker.close()
    assert (scorer.closed, cache.closed, secondary.closed) == (0, 0, 0)
    # the caller's event log still takes events after the reranker is gone
    other = Reranker(CrcScorer(), event_log=log, cache=None)
    other.rerank("q", ["c"])
    other.close()
    log.close()
    lines = [p.read_text().splitlines() for p in (tmp_path / "events").glob("*.jsonl")]
    assert sum(len(chunk) for chunk in lines) == 2


def test_what_the_reranker_built_is_closed(tmp_path):
    reranker = Reranker(CrcScorer(), event_log=tmp_path / "events")
    built_log = reranker.event_log
    reranker.rerank("q", ["a", "b"])
    reranker.close()
    assert built_log.closed
    reranker.close()  # idempotent
