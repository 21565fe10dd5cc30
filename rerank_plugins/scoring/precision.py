"""Exact where it matters: which candidates a reduced-precision score could misplace.

A bf16 (or int8) forward pass moves each raw score by at most some error ``e`` that
depends on the model, so two candidates can only swap places when their fast scores
are within ``2e`` of each other. The scorer measures ``e`` once at load
(:func:`calibrate_error`: the same fixed pairs through the fast and the fp32 path)
and, per request, re-scores in fp32 only the candidates :func:`near_boundary`
returns: those whose position in the ordered head could change. On a trained
reranker (score margins far above ``e``) that is almost nobody; on a model whose
scores all lie within ``e`` of each other it is most of the head, and that is the
honest price of an exact head there.

The calibration pairs are fixed text written for this purpose, never user data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

#: Neutral English paragraphs of assorted topics; queries are paired with every
#: paragraph and with joined paragraphs, so short and long inputs are both measured.
CALIBRATION_PASSAGES = (
    "The wing of an aircraft produces lift because the airfoil turns the oncoming air "
    "downwards; the pressure on the upper surface falls below the pressure underneath, "
    "and the difference, integrated over the span, carries the weight of the aircraft.",
    "Libraries classify their collections so that readers can find related works on the "
    "same shelf. Subject headings, controlled vocabularies and citation indexes each "
    "offer a different route from a reader's question to the documents that answer it.",
    "A boundary layer forms wherever a viscous fluid flows past a solid surface. Close "
    "to the wall the velocity drops to zero, and heat transfer through this thin region "
    "decides how hot the surface becomes at high speed.",
    "Bread rises when yeast ferments the sugars in the dough and releases carbon "
    "dioxide, which the gluten network traps in small bubbles. Longer, cooler "
    "fermentation develops more flavour than a quick rise in a warm kitchen.",
    "Thin cylindrical shells under axial compression buckle at loads well below the "
    "classical prediction, because small imperfections in the shape grow quickly once "
    "the load approaches the critical value.",
    "The committee reviewed the budget for the coming year, approved the new reading "
    "room and asked the staff to report on the cost of keeping the archive open on "
    "weekends during the examination period.",
    "Migratory birds navigate using the position of the sun, the pattern of the stars "
    "and the earth's magnetic field; young birds on their first journey rely more on "
    "inherited direction than on learned landmarks.",
    "Information retrieval systems rank documents by estimated relevance to a query. "
    "Term weighting, document length normalisation and relevance feedback all change "
    "which documents appear at the top of the list a user reads first.",
)
CALIBRATION_QUERIES = (
    "how does a wing produce lift",
    "methods for indexing and classifying library documents",
    "heat transfer in the boundary layer at high speed",
    "what makes bread rise",
)

#: The calibrated error is multiplied by this before it is used as the band, so an
#: input slightly worse than any calibration pair still stays inside it.
DEFAULT_BAND_SCALE = 2.0
#: The ordered head whose order must equal the fp32 order. Defaults to 10.
DEFAULT_EXACT_HEAD = 10


def calibration_pairs() -> list[tuple[str, str]]:
    """Fixed (query, text) pairs (24): short passages and ~340-token joins per query."""
    joined = [" ".join(CALIBRATION_PASSAGES[i:] + CALIBRATION_PASSAGES[:i]) for i in (0, 3)]
    pairs = []
    for offset, query in enumerate(CALIBRATION_QUERIES):
        # four short passages per query (rotating), plus both long joins
        short = [CALIBRATION_PASSAGES[(offset * 2 + k) % len(CALIBRATION_PASSAGES)]
                 for k in range(4)]
        pairs.extend((query, text) for text in (*short, *joined))
    return pairs


def calibrate_error(fast: Callable[[list[tuple[str, str]]], Sequence[float]],
                    exact: Callable[[list[tuple[str, str]]], Sequence[float]],
                    pairs: list[tuple[str, str]] | None = None) -> float:
    """Largest ``|fast - exact|`` raw-score difference over the calibration pairs."""
    pairs = pairs if pairs is not None else calibration_pairs()
    fast_scores = list(fast(pairs))
    exact_scores = list(exact(pairs))
    worst = 0.0
    for a, b in zip(fast_scores, exact_scores, strict=True):
        difference = abs(float(a) - float(b))
        if not math.isfinite(difference):
            return math.inf
        worst = max(worst, difference)
    return worst


def near_boundary(scores: Sequence[float], band: float, head: int) -> list[int]:
    """Indices whose place in the ordered top ``head`` a score error of ``band`` could change.

    Every score is within ``band`` of its exact value, so candidates ``i`` and ``j``
    can swap only if ``|s_i - s_j| <= 2 * band``. The ordered head is decided once
    (a) no head member has such a neighbour and (b) nobody outside the head could
    climb into it. Returned: the head members with a close neighbour, and the
    candidates outside the head within ``2 * band`` of its last score. After those
    are re-scored exactly, the top ``head`` is in exact order (ties aside).

    Args:
        scores: Fast (reduced-precision) scores of one request's candidates.
        band: Largest error of a fast score; ``0`` returns nobody.
        head: How many leading ranks must be in exact order.

    Returns:
        Candidate indices, ascending.
    """
    count = len(scores)
    if count < 2 or band <= 0 or head <= 0:
        return []
    if not math.isfinite(band):
        return list(range(count))
    order = sorted(range(count), key=lambda i: scores[i], reverse=True)
    head = min(head, count)
    gap = 2.0 * band
    chosen: set[int] = set()
    # (a) within the head, and its last member against the first outsiders: in a
    # sorted list the closest neighbours of a rank are the adjacent ranks
    for rank in range(min(head, count - 1)):
        upper, lower = order[rank], order[rank + 1]
        if scores[upper] - scores[lower] <= gap:
            chosen.add(upper)
            chosen.add(lower)
    # (b) every outsider that could climb above the last head member; chained
    # outsiders below the first are caught here too
    boundary = scores[order[head - 1]]
    for rank in range(head, count):
        index = order[rank]
        if boundary - scores[index] > gap:
            break
        chosen.add(index)
        chosen.add(order[head - 1])
    return sorted(chosen)
