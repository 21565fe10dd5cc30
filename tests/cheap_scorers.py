"""Cheap deterministic scorers for tests whose subject is not the model
(caches, privacy, fault paths, fuzzing): they implement the real Scorer protocol
with crc32 of the text, so thousands of requests cost microseconds."""

from __future__ import annotations

import zlib

from rerank_plugins.scoring.base import ScoreOutput


def crc_score(text: str) -> float:
    """A stable raw score in [-5, 5) from the text (lone surrogates allowed)."""
    return (zlib.crc32(text.encode("utf-8", "surrogatepass")) % 1000) / 100 - 5


class CrcScorer:
    """Scores each text by :func:`crc_score`; ``namespace`` keeps caches apart."""

    model_id = "crc"
    revision = "1"
    activation = "sigmoid"

    def __init__(self, namespace: str = "crc-v1") -> None:
        self.cache_namespace = namespace

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision}

    def score_many(self, requests):
        return [ScoreOutput([crc_score(t) for t in r.texts]) for r in requests]
