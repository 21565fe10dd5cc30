"""Scorers: the models behind the pipeline, all behind the :class:`Scorer` protocol."""

from .base import ScoreOutput, Scorer, ScoreRequest
from .default_model import DEFAULT_CROSS_ENCODER, bundled_model_path

__all__ = [
    "DEFAULT_CROSS_ENCODER", "BiEncoderScorer", "CrossEncoderScorer", "ScoreOutput",
    "RemoteScorer", "ScoreRequest", "Scorer", "bundled_model_path",
]


def __getattr__(name: str):
    # torch/sentence-transformers load only when a local scorer is asked for
    if name == "CrossEncoderScorer":
        from .cross_encoder import CrossEncoderScorer

        return CrossEncoderScorer
    if name == "BiEncoderScorer":
        from .bi_encoder import BiEncoderScorer

        return BiEncoderScorer
    if name == "RemoteScorer":  # httpx loads only when a remote scorer is asked for
        from .remote import RemoteScorer

        return RemoteScorer
    raise AttributeError(name)
