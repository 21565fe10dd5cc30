"""LLM scorer: an OpenAI-compatible chat endpoint as a :class:`Scorer`.

Two ways to ask the model, both through ``POST {base_url}/chat/completions``:

* ``mode="pointwise"`` (default): one call per document, at most ``max_concurrency``
  in flight, answering ``{"score": <0..10>}``; the raw score is that number / 10
  (activation ``identity``). A document's score does not depend on the other
  candidates, so the pair cache may keep it.
* ``mode="listwise"``: the documents of a window (``window``, default 20) in one
  prompt, answering ``{"ranking": [ids, most relevant first]}``; windows slide from
  the bottom of the retrieval order to the top by ``step`` (default 10), so a
  relevant document found low can climb up to the first window (the RankGPT sliding
  window). The raw score is ``1 - position / n`` in the final order: an order, not a
  probability, so a ``threshold`` means little here, and the score of a document
  depends on the other candidates -- ``pair_cacheable`` is ``False`` and the pair
  cache must not keep it (pass ``cache=None`` to the Reranker in this mode).

Parsing is strict: the answer must be one JSON object (surrounding whitespace and
one Markdown code fence are tolerated, nothing else), with the field in range.
Anything else -- prose, two objects, a score of 11, a ranking with an unknown or a
repeated id -- is a ``ScorerError`` (reason ``error``), so the Reranker falls back
instead of ranking on a guess. A listwise ranking that leaves ids out is accepted
(the ids it left out keep their input order after the ranked ones) and counted as
``incomplete``. Parse failures are not retried: at temperature 0 the same prompt
gives the same answer.

The HTTP exchange (pooled clients, deadline-capped timeouts, the mapping of 429/5xx
and timeouts onto the error tree, retries that start only when the deadline has room
for them) is the one :class:`~rerank_plugins.scoring.remote.RemoteScorer` uses
(:mod:`._http`).

Cost: every answer's ``usage.prompt_tokens`` / ``usage.completion_tokens`` is added
to ``rerank_llm_tokens{model, token_type}`` as it arrives (failed requests still
spent them) and summed per request on ``ScoreOutput.extra`` (``prompt_tokens``,
``completion_tokens``, ``llm_calls``, ``http_calls``).

Each document is cut to ``max_chars_per_doc`` characters in the prompt (the query
to ``max_query_chars``); cut documents are counted as truncations.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigurationError, ScorerError
from ..telemetry import contract as c
from ..telemetry import instruments
from ..waiting import Plan, run_async, run_sync
from ._http import HttpExchange
from .base import Identified, ScoreOutput, ScoreRequest

__all__ = ["LLMScorer", "MODES", "PROMPT_VERSION", "parse_ranking", "parse_score"]

MODES = ("pointwise", "listwise")
#: Part of the cache namespace: change it whenever a prompt changes.
PROMPT_VERSION = "1"
SCORE_MAX = 10

POINTWISE_SYSTEM = (
    "You judge search results. Rate how well the document answers the query on an "
    f"integer scale from 0 (unrelated) to {SCORE_MAX} (answers it fully). "
    'Reply with JSON only, exactly: {"score": <integer>}')
LISTWISE_SYSTEM = (
    "You rank search results. Order the numbered passages by how well they answer "
    "the query, most relevant first, using every passage number exactly once. "
    'Reply with JSON only, exactly: {"ranking": [<numbers>]}')


# Worked examples put before the real question when ``examples=True``: small local
# models follow the answer format with them (SmolLM2-135M: 0 of 2 answers parsed
# zero-shot, 2 of 2 with these), at about 80 prompt tokens per call.
_POINTWISE_EXAMPLES = (
    ("boiling point of water", "Water boils at 100 degrees Celsius at sea level.", 10),
    ("boiling point of water", "The Eiffel Tower is in Paris.", 0),
)
_LISTWISE_EXAMPLE = ("boiling point of water",
                     ("The Eiffel Tower is in Paris.",
                      "Water boils at 100 degrees Celsius at sea level."), (2, 1))


def _strip_fence(content: str) -> str:
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3]
        first_line, _, rest = text.partition("\n")
        if first_line.strip().lower() in ("", "json"):
            text = rest
        text = text.strip()
    return text


def _json_object(content: str, field_name: str) -> object:
    text = _strip_fence(content)
    try:
        value = json.loads(text)
    except ValueError:
        raise ScorerError(f"LLM answer is not one JSON object ({len(text)} chars)") from None
    if not isinstance(value, dict) or field_name not in value:
        raise ScorerError(f"LLM answer has no {field_name!r} field")
    return value[field_name]


def parse_score(content: str) -> float:
    """``{"score": N}`` with ``0 <= N <= 10`` -> ``N / 10``; anything else is a ScorerError."""
    score = _json_object(content, "score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or \
            not math.isfinite(score):
        raise ScorerError("LLM answer's score is not a number")
    if not 0 <= score <= SCORE_MAX:
        raise ScorerError(f"LLM answer's score {score!r} is outside 0..{SCORE_MAX}")
    return float(score) / SCORE_MAX


def parse_ranking(content: str, n: int) -> tuple[list[int], bool]:
    """``{"ranking": [1-based ids]}`` -> (0-based order of all ``n``, complete?).

    Unknown, repeated or non-integer ids are a ScorerError; ids left out follow the
    ranked ones in their input order (``complete`` is then False).
    """
    ranking = _json_object(content, "ranking")
    if not isinstance(ranking, list):
        raise ScorerError("LLM answer's ranking is not a list")
    order: list[int] = []
    seen: set[int] = set()
    for item in ranking:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ScorerError("LLM answer's ranking holds a non-integer id")
        if not 1 <= item <= n:
            raise ScorerError(f"LLM answer's ranking names id {item} of {n}")
        if item in seen:
            raise ScorerError(f"LLM answer's ranking repeats id {item}")
        seen.add(item)
        order.append(item - 1)
    complete = len(order) == n
    order += [i for i in range(n) if i + 1 not in seen]
    return order, complete


@dataclass(frozen=True)
class _Answer:
    value: object
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Tally:
    """Per-request counters, filled as answers arrive (from several threads)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    http_calls: int = 0
    incomplete: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, answer: _Answer, attempts: int) -> None:
        with self.lock:
            self.prompt_tokens += answer.prompt_tokens
            self.completion_tokens += answer.completion_tokens
            self.llm_calls += 1
            self.http_calls += attempts


class LLMScorer(Identified):
    """Scores (query, document) pairs with a chat LLM behind an OpenAI-compatible API.

    Works with OpenAI, vLLM, llama.cpp's ``llama-server``, Ollama, LM Studio and any
    other server of ``POST /v1/chat/completions``. Because it is a :class:`Scorer`,
    :class:`~rerank_plugins.Reranker` guards it like any model: deadline, circuit
    breaker, fallback to a secondary scorer or the retrieval order.

    Args:
        base_url: The API root including its version, e.g. ``http://127.0.0.1:8000/v1``
            or ``https://api.openai.com/v1``; ``/chat/completions`` is appended.
        model: The model name sent in every request; part of the cache namespace.
        mode: ``"pointwise"`` or ``"listwise"`` (see the module docstring).
            Defaults to ``"pointwise"``.
        api_key_env: Environment variable holding the API key (sent as a bearer token,
            never logged, shown or put in the cache namespace). ``None`` sends none.
            Defaults to ``None``.
        revision: The served weights' revision, if known. Defaults to ``""``.
        max_chars_per_doc: Characters of each document put in the prompt.
            Defaults to 1000.
        max_query_chars: Characters of the query put in the prompt. Defaults to 500.
        max_concurrency: Pointwise calls in flight per ``score_many``. Defaults to 4.
        window: Listwise: documents per prompt. Defaults to 20.
        step: Listwise: how far the window moves up each time. Defaults to 10.
        max_completion_tokens: Cap on the answer (``max_tokens``). Defaults to 16
            pointwise, ``8 + 4 * window`` listwise.
        examples: Put two worked examples (pointwise) or one (listwise) before the
            question, as earlier chat turns. Small models need them to answer in the
            format; large ones do not (set False to save ~80 prompt tokens a call).
            Defaults to True.
        response_format_json: Also send ``response_format: {"type": "json_object"}``
            (OpenAI, vLLM, llama.cpp honour it; some servers refuse unknown fields).
            Defaults to False.
        timeout_s: Deadline of a call whose requests carry none. Defaults to 30.
        connect_timeout_s: Connect timeout (capped by the deadline). Defaults to 1.
        read_timeout_s: Wait for one answer (capped by the deadline). Defaults to 30.
        max_retries: Extra attempts on 429/502/503/504, timeouts and refused or reset
            connections, deadline permitting. Defaults to 2.
        retry_backoff_s: First back-off (doubles, with jitter; ``Retry-After`` is
            honoured when it fits). Defaults to 0.2.
        max_connections: Connection pool size. Defaults to 8.
        ca_bundle: PEM file of CAs to trust; TLS verification is always on.
        trust_env: Honour proxy environment variables. Defaults to False.
        clock: Monotonic clock. Defaults to ``time.monotonic``.

    Example::

        scorer = LLMScorer("http://127.0.0.1:8000/v1", model="qwen2.5-1.5b-instruct")
        reranker = Reranker(scorer, timeout_s=8, top_n=5)
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        mode: str = "pointwise",
        api_key_env: str | None = None,
        revision: str = "",
        max_chars_per_doc: int = 1000,
        max_query_chars: int = 500,
        max_concurrency: int = 4,
        window: int = 20,
        step: int = 10,
        max_completion_tokens: int | None = None,
        examples: bool = True,
        response_format_json: bool = False,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 30.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.2,
        max_connections: int = 8,
        ca_bundle: str | None = None,
        trust_env: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError("model must name the model the endpoint serves")
        for name, value in (("max_chars_per_doc", max_chars_per_doc),
                            ("max_query_chars", max_query_chars),
                            ("max_concurrency", max_concurrency), ("window", window),
                            ("step", step), ("max_connections", max_connections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if mode == "listwise" and not step < window:
            raise ConfigurationError("step must be smaller than window (windows overlap)")
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s),
                            ("read_timeout_s", read_timeout_s)):
            if not value > 0:
                raise ConfigurationError(f"{name} must be > 0")
        if max_retries < 0 or retry_backoff_s < 0:
            raise ConfigurationError("max_retries and retry_backoff_s must be >= 0")
        if max_completion_tokens is not None and max_completion_tokens < 1:
            raise ConfigurationError("max_completion_tokens must be >= 1 or None")
        self._http = HttpExchange(
            base_url, owner="LLMScorer", api_key_env=api_key_env,
            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            max_connections=max_connections, max_retries=max_retries,
            retry_backoff_s=retry_backoff_s, ca_bundle=ca_bundle, trust_env=trust_env,
            clock=clock)
        self.endpoint = self._http.url + "/chat/completions"
        self.mode = mode
        self._model_id = model
        self._revision = revision
        self.max_chars_per_doc = max_chars_per_doc
        self.max_query_chars = max_query_chars
        self.max_concurrency = max_concurrency
        self.window = window
        self.step = step
        self.max_completion_tokens = max_completion_tokens or (
            16 if mode == "pointwise" else 8 + 4 * window)
        self.examples = bool(examples)
        self.response_format_json = bool(response_format_json)
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- protocol -----------------------------------------------------------------
    @property
    def activation(self) -> str:
        return "identity"

    @property
    def pair_cacheable(self) -> bool:
        """False in listwise mode: a document's score depends on the other candidates."""
        return self.mode == "pointwise"

    @property
    def cache_namespace(self) -> str:
        settings = (f"chars={self.max_chars_per_doc}|qchars={self.max_query_chars}|"
                    f"examples={int(self.examples)}")
        if self.mode == "listwise":
            settings += f"|window={self.window}|step={self.step}"
        return (f"llm|{self.mode}|{self._model_id}|{self._revision}|{self.endpoint}|"
                f"prompt={PROMPT_VERSION}|{settings}")

    def describe(self) -> dict[str, str]:
        return {"model": self._model_id, "revision": self._revision, "device": "remote",
                "dtype": "remote", "kind": f"llm-{self.mode}", "endpoint": self.endpoint}

    def __repr__(self) -> str:
        return (f"LLMScorer(mode={self.mode!r}, endpoint={self.endpoint!r}, "
                f"model={self._model_id!r})")

    # -- scoring --------------------------------------------------------------------
    def score_many(self, requests: Sequence[ScoreRequest], *,
                   deadline_s: float | None = None) -> list[ScoreOutput]:
        """Score every request on the LLM.

        Args:
            requests: Queries with their texts; a request's ``deadline_at`` wins.
            deadline_s: Seconds from now for requests without one. Defaults to
                ``timeout_s``.

        Raises:
            ScorerTimeout: The deadline passed before every answer arrived.
            RemoteOverloaded: 429/503 and no retry fitted in the deadline.
            ScorerError: Any other failure, an answer the strict parser refused included.
        """
        deadlines = self._deadlines(requests, deadline_s)
        outputs = []
        for request, deadline_at in zip(requests, deadlines, strict=True):
            started = self._clock()
            tally = _Tally()
            if self.mode == "pointwise":
                scores = self._pointwise_sync(request, deadline_at, tally)
            else:
                scores = run_sync(self._listwise_plan(request, deadline_at, tally,
                                                      self._http.sync_post))
            outputs.append(self._output(request, scores, tally, self._clock() - started))
        return outputs

    async def ascore_many(self, requests: Sequence[ScoreRequest], *,
                          deadline_s: float | None = None) -> list[ScoreOutput]:
        """Async :meth:`score_many` on a pooled ``httpx.AsyncClient``: the same plans,
        awaited (pointwise calls gathered under the same concurrency bound)."""
        deadlines = self._deadlines(requests, deadline_s)
        outputs = []
        for request, deadline_at in zip(requests, deadlines, strict=True):
            started = self._clock()
            tally = _Tally()
            post = self._http.async_post()
            if self.mode == "pointwise":
                limit = asyncio.Semaphore(self.max_concurrency)

                async def one(text: str, deadline_at=deadline_at, tally=tally,
                              request=request, limit=limit, post=post) -> float:
                    async with limit:
                        return await run_async(self._call_plan(
                            self._pointwise_messages(request.query, text), deadline_at,
                            parse_score, tally, post))

                tasks = [asyncio.ensure_future(one(t)) for t in request.texts]
                try:
                    scores = list(await asyncio.gather(*tasks))
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    raise
            else:
                scores = await run_async(self._listwise_plan(request, deadline_at, tally,
                                                             post))
            outputs.append(self._output(request, scores, tally, self._clock() - started))
        return outputs

    def close(self) -> None:
        """Close the connection pool and the worker threads."""
        self._http.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def aclose(self) -> None:
        """Close the async connection pool, then the sync one."""
        await self._http.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # -- pointwise --------------------------------------------------------------------
    def _pointwise_sync(self, request: ScoreRequest, deadline_at: float,
                        tally: _Tally) -> list[float]:
        texts = list(request.texts)
        if not texts:
            return []
        if len(texts) == 1 or self.max_concurrency == 1:
            return [self._call(self._pointwise_messages(request.query, t), deadline_at,
                               parse_score, tally) for t in texts]
        pool = self._executor()
        futures = [pool.submit(self._call, self._pointwise_messages(request.query, t),
                               deadline_at, parse_score, tally) for t in texts]
        done, pending = concurrent.futures.wait(
            futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            for future in pending:
                future.cancel()  # queued calls of a failed request are never sent
            raise failed[0].exception()
        return [f.result() for f in futures]

    def _pointwise_messages(self, query: str, text: str) -> list[dict]:
        messages = [{"role": "system", "content": POINTWISE_SYSTEM}]
        if self.examples:
            for example_query, document, score in _POINTWISE_EXAMPLES:
                messages += [
                    {"role": "user",
                     "content": f"Query: {example_query}\n\nDocument:\n{document}"},
                    {"role": "assistant", "content": json.dumps({"score": score})}]
        messages.append({"role": "user", "content": f"Query: {self._cut_query(query)}\n\n"
                                                    f"Document:\n{self._cut(text)}"})
        return messages

    # -- listwise ---------------------------------------------------------------------
    def _windows(self, n: int) -> list[tuple[int, int]]:
        """(start, end) of each window, from the bottom of the list to the top."""
        if n <= 1:
            return []
        spans = []
        end = n
        while True:
            start = max(0, end - self.window)
            spans.append((start, end))
            if start == 0:
                return spans
            end -= self.step

    def _listwise_plan(self, request: ScoreRequest, deadline_at: float, tally: _Tally,
                       post) -> Plan[list[float]]:
        """The sliding windows, bottom to top, written once for both drivers."""
        order = list(range(len(request.texts)))
        for start, end in self._windows(len(order)):
            ids = order[start:end]
            ranked = yield from self._call_plan(
                self._listwise_messages(request.query, [request.texts[i] for i in ids]),
                deadline_at, self._ranking_parser(len(ids)), tally, post)
            order[start:end] = self._apply(ids, ranked, tally)
        return self._order_scores(order)

    @staticmethod
    def _ranking_parser(n: int):
        return lambda content: parse_ranking(content, n)

    def _apply(self, ids: list[int], ranked: tuple[list[int], bool],
               tally: _Tally) -> list[int]:
        positions, complete = ranked
        if not complete:
            tally.incomplete += 1
        return [ids[p] for p in positions]

    @staticmethod
    def _order_scores(order: list[int]) -> list[float]:
        n = len(order)
        scores = [0.0] * n
        for position, index in enumerate(order):
            scores[index] = 1.0 - position / n
        return scores

    def _listwise_messages(self, query: str, texts: list[str]) -> list[dict]:
        messages = [{"role": "system", "content": LISTWISE_SYSTEM}]
        if self.examples:
            example_query, documents, ranking = _LISTWISE_EXAMPLE
            messages += [
                {"role": "user", "content": _listwise_question(example_query, documents)},
                {"role": "assistant", "content": json.dumps({"ranking": list(ranking)})}]
        messages.append({"role": "user", "content": _listwise_question(
            self._cut_query(query), [self._cut(t) for t in texts])})
        return messages

    # -- one chat call ----------------------------------------------------------------
    def _payload(self, messages: list[dict]) -> dict:
        payload = {"model": self._model_id, "messages": messages, "temperature": 0,
                   "max_tokens": self.max_completion_tokens, "n": 1, "stream": False}
        if self.response_format_json:
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _reader(self, parse: Callable[[str], object]) -> Callable[[bytes], _Answer]:
        def read(body: bytes) -> _Answer:
            content, prompt_tokens, completion_tokens = self._completion(body)
            # tokens were spent whether or not the content parses
            self._count_tokens(prompt_tokens, completion_tokens)
            try:
                value = parse(content)
            except ScorerError:
                instruments.add(c.LLM_ANSWERS, 1, model=self._model_id, result="invalid")
                raise
            # a listwise ranking that left ids out is used, but counted apart
            complete = not isinstance(value, tuple) or value[1]
            instruments.add(c.LLM_ANSWERS, 1, model=self._model_id,
                            result="ok" if complete else "incomplete")
            return _Answer(value, prompt_tokens, completion_tokens)
        return read

    def _call_plan(self, messages, deadline_at, parse, tally: _Tally, post) -> Plan:
        """One chat call as a plan (the shared HTTP exchange, with its retries)."""
        answer, attempts = yield from self._http.exchange(
            self.endpoint, self._payload(messages), deadline_at, self._reader(parse), post)
        tally.add(answer, attempts)
        return answer.value

    def _call(self, messages, deadline_at, parse, tally: _Tally):
        return run_sync(self._call_plan(messages, deadline_at, parse, tally,
                                        self._http.sync_post))

    def _completion(self, body: bytes) -> tuple[str, int, int]:
        try:
            data = json.loads(body)
        except ValueError:
            raise ScorerError(f"{self.endpoint} answered non-JSON") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or \
                not isinstance(choices[0], dict):
            raise ScorerError(f"{self.endpoint} answered without exactly one choice")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ScorerError(f"{self.endpoint} answered a choice without text content")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return content, _count(usage.get("prompt_tokens")), \
            _count(usage.get("completion_tokens"))

    def _count_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens:
            instruments.add(c.LLM_TOKENS, prompt_tokens, model=self._model_id,
                            token_type="prompt")
        if completion_tokens:
            instruments.add(c.LLM_TOKENS, completion_tokens, model=self._model_id,
                            token_type="completion")

    # -- helpers ------------------------------------------------------------------------
    def _cut(self, text: str) -> str:
        return text[:self.max_chars_per_doc]

    def _cut_query(self, query: str) -> str:
        return query[:self.max_query_chars]

    def _deadlines(self, requests: Sequence[ScoreRequest], deadline_s: float | None):
        default_at = self._clock() + (self.timeout_s if deadline_s is None
                                      else max(0.0, deadline_s))
        return [getattr(r, "deadline_at", None) or default_at for r in requests]

    def _output(self, request: ScoreRequest, scores: list[float], tally: _Tally,
                elapsed: float) -> ScoreOutput:
        truncated = sum(1 for t in request.texts if len(t) > self.max_chars_per_doc)
        return ScoreOutput(scores, truncated, elapsed, extra={
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "llm_calls": tally.llm_calls, "http_calls": tally.http_calls,
            "incomplete_rankings": tally.incomplete, "endpoint": self.endpoint})

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.max_concurrency, thread_name_prefix="rerank-llm")
            return self._pool


def _listwise_question(query: str, texts: Sequence[str]) -> str:
    passages = "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts, 1))
    return (f"Query: {query}\n\nPassages:\n{passages}\n\n"
            f"Rank all {len(texts)} passage numbers.")


def _count(value) -> int:
    """A usage count as reported; anything that is not a non-negative int counts 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value
