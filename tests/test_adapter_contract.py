"""One contract, both drop-ins: the same scenarios through the LlamaIndex node
postprocessor and the LangChain document compressor, with the real bundled model."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rerank_plugins import Reranker
from rerank_plugins._adapter_common import RESULT_KEYS
from rerank_plugins.errors import ConfigurationError

QUERY = "how does a wing produce lift"
# Retrieval order (scores descending) puts the relevant passage last on purpose.
CORPUS = [
    ("Cats purr at 25 to 150 Hz, which may help their bones heal.", 0.91),
    ("A sourdough starter is a culture of wild yeast and bacteria.", 0.84),
    ("Espresso is brewed by forcing hot water through ground coffee.", 0.80),
    ("The Great Wall of China is not visible from orbit.", 0.72),
    ("An airfoil deflects air downward, and the reaction lifts the wing.", 0.65),
]
RELEVANT = CORPUS[4][0]


@dataclass
class Out:
    """One returned item, framework-neutral."""

    text: str
    score: float | None  # node.score (LlamaIndex) or metadata relevance_score (LangChain)
    metadata: dict[str, Any]


class LlamaIndexDriver:
    name = "llama_index"

    def make(self, **settings):
        from rerank_plugins.llama_index import CrossEncoderRerank

        # the contract pins the model's own order; fusion has tests of its own
        if "reranker" not in settings:
            settings.setdefault("fusion", "none")
        # the contract reads every result key; LlamaIndex's default leaves the
        # retrieval score out (keep_retrieval_score=False, as SentenceTransformerRerank)
        settings.setdefault("keep_retrieval_score", True)
        return CrossEncoderRerank(**settings)

    def inputs(self, items: Sequence[tuple[str, float | None]], *, same_id: bool = False):
        from llama_index.core.schema import NodeWithScore, TextNode

        return [
            NodeWithScore(
                node=TextNode(text=text, id_="dup" if same_id else f"n{i}",
                              metadata={"doc": i}, excluded_embed_metadata_keys=["doc"]),
                score=score)
            for i, (text, score) in enumerate(items)
        ]

    def snapshot(self, inputs):
        return [copy.deepcopy(n.model_dump()) for n in inputs]

    @staticmethod
    def _out(nodes) -> list[Out]:
        from llama_index.core.schema import MetadataMode

        return [Out(n.node.get_content(metadata_mode=MetadataMode.NONE), n.score,
                    dict(n.node.metadata)) for n in nodes]

    def run(self, adapter, query, inputs) -> list[Out]:
        return self._out(adapter.postprocess_nodes(inputs, query_str=query))

    async def arun(self, adapter, query, inputs) -> list[Out]:
        return self._out(await adapter.apostprocess_nodes(inputs, query_str=query))


class LangChainDriver:
    name = "langchain"

    def make(self, **settings):
        from rerank_plugins.langchain import CrossEncoderRerank

        # the contract pins the model's own order; fusion has tests of its own
        if "reranker" not in settings:
            settings.setdefault("fusion", "none")
        return CrossEncoderRerank(**settings)

    def inputs(self, items, *, same_id: bool = False):
        from langchain_core.documents import Document

        return [Document(page_content=text, metadata={"doc": i, "score": score},
                         id="dup" if same_id else f"d{i}")
                for i, (text, score) in enumerate(items)]

    def snapshot(self, inputs):
        return [copy.deepcopy(d.model_dump()) for d in inputs]

    @staticmethod
    def _out(docs) -> list[Out]:
        return [Out(d.page_content, d.metadata["relevance_score"], dict(d.metadata))
                for d in docs]

    def run(self, adapter, query, inputs) -> list[Out]:
        return self._out(adapter.compress_documents(inputs, query))

    async def arun(self, adapter, query, inputs) -> list[Out]:
        return self._out(await adapter.acompress_documents(inputs, query))


@pytest.fixture(params=[LlamaIndexDriver(), LangChainDriver()], ids=lambda d: d.name)
def driver(request):
    return request.param


class FailingScorer:
    """Fake: the real model cannot be made to raise on demand. Same identity as the
    real scorer; every call fails."""

    def __init__(self, real) -> None:
        self._real = real
        self.calls = 0

    model_id = property(lambda self: self._real.model_id)
    revision = property(lambda self: self._real.revision)
    cache_namespace = property(lambda self: "failing|" + self._real.cache_namespace)
    activation = property(lambda self: self._real.activation)

    def describe(self):
        return self._real.describe()

    def score_many(self, requests):
        self.calls += 1
        raise RuntimeError("injected model failure")


class SlowScorer(FailingScorer):
    """Fake: a real model cannot be made to hang on demand; this one answers late."""

    cache_namespace = property(lambda self: "slow|" + self._real.cache_namespace)

    def score_many(self, requests):
        time.sleep(2.0)
        return self._real.score_many(requests)


def expected_order(scorer, items, **settings) -> list[str]:
    """The core Reranker's answer for the same texts (what an adapter must return)."""
    settings.setdefault("fusion", "none")  # as the drivers' make()
    reranker = Reranker(scorer, cache=None, timeout_s=None, **settings)
    result = reranker.rerank(QUERY, [{"text": t, "retrieval_score": s} for t, s in items])
    reranker.close()
    return [item.text for item in result]


# -- ordering, top_n, threshold, min_keep -------------------------------------------
def test_orders_by_relevance_like_the_core_reranker(driver, bi_scorer):
    adapter = driver.make(scorer=bi_scorer, top_n=None)
    out = driver.run(adapter, QUERY, driver.inputs(CORPUS))
    assert [o.text for o in out] == expected_order(bi_scorer, CORPUS)
    assert out[0].text == RELEVANT, "the model must move the relevant passage up"
    scores = [o.score for o in out]
    assert scores == sorted(scores, reverse=True)
    assert len(out) == len(CORPUS)


@pytest.mark.parametrize("top_n", [1, 2, 5])
def test_top_n_cuts_after_ranking(driver, bi_scorer, top_n):
    adapter = driver.make(scorer=bi_scorer, top_n=top_n)
    out = driver.run(adapter, QUERY, driver.inputs(CORPUS))
    assert [o.text for o in out] == expected_order(bi_scorer, CORPUS)[:top_n]


def test_threshold_and_min_keep(driver, bi_scorer):
    everything = driver.run(driver.make(scorer=bi_scorer, top_n=None), QUERY,
                            driver.inputs(CORPUS))
    model_scores = [o.score for o in everything]  # fusion off: relevance = model score
    between_first_and_second = (model_scores[0] + model_scores[1]) / 2
    only_best = driver.make(scorer=bi_scorer, top_n=None, threshold=between_first_and_second,
                            min_keep=0)
    assert [o.text for o in driver.run(only_best, QUERY, driver.inputs(CORPUS))] == [RELEVANT]

    none_pass = driver.make(scorer=bi_scorer, top_n=None, threshold=0.999, min_keep=0)
    assert driver.run(none_pass, QUERY, driver.inputs(CORPUS)) == []

    floor = driver.make(scorer=bi_scorer, top_n=None, threshold=0.999, min_keep=2)
    kept = driver.run(floor, QUERY, driver.inputs(CORPUS))
    assert [o.text for o in kept] == [o.text for o in everything[:2]]


# -- cache, fallback -------------------------------------------------------------------
def test_repeat_is_served_from_cache(driver, bi_scorer):
    adapter = driver.make(scorer=bi_scorer, top_n=3)
    first = driver.run(adapter, QUERY, driver.inputs(CORPUS))
    second = driver.run(adapter, QUERY, driver.inputs(CORPUS))
    assert {o.metadata["rerank_status"] for o in first} == {"ok"}
    assert {o.metadata["rerank_status"] for o in second} == {"cache"}
    assert [(o.text, o.score) for o in second] == [(o.text, o.score) for o in first]


def test_injected_scorer_failure_falls_back_to_retrieval_order(driver, bi_scorer):
    failing = FailingScorer(bi_scorer)
    adapter = driver.make(scorer=failing, top_n=3)
    out = driver.run(adapter, QUERY, driver.inputs(CORPUS))
    assert failing.calls == 1
    assert [o.text for o in out] == [t for t, _ in CORPUS[:3]]
    for rank, o in enumerate(out):
        assert o.metadata["rerank_status"] == "fallback"
        assert o.metadata["rerank_fallback_reason"] == "error"
        assert o.metadata["relevance_score"] is None
        assert o.metadata["retrieval_rank"] == rank
        assert o.metadata["retrieval_score"] == CORPUS[rank][1]


async def test_deadline_falls_back_async(driver, bi_scorer):
    adapter = driver.make(scorer=SlowScorer(bi_scorer), top_n=2, timeout_s=0.05)
    started = time.perf_counter()
    out = await driver.arun(adapter, QUERY, driver.inputs(CORPUS))
    assert time.perf_counter() - started < 1.5, "the caller must not wait for the model"
    assert [o.text for o in out] == [t for t, _ in CORPUS[:2]]
    assert {o.metadata["rerank_fallback_reason"] for o in out} == {"timeout"}


# -- metadata, inputs, ids --------------------------------------------------------------
def test_metadata_keys_and_inputs_untouched(driver, bi_scorer):
    adapter = driver.make(scorer=bi_scorer, top_n=None)
    inputs = driver.inputs(CORPUS)
    before = driver.snapshot(inputs)
    out = driver.run(adapter, QUERY, inputs)
    assert driver.snapshot(inputs) == before
    position = {text: i for i, (text, _) in enumerate(CORPUS)}
    for o in out:
        assert set(RESULT_KEYS) <= set(o.metadata)
        i = position[o.text]
        assert o.metadata["doc"] == i, "the caller's metadata is carried through"
        assert o.metadata["retrieval_rank"] == i
        assert o.metadata["retrieval_score"] == CORPUS[i][1]
        assert o.metadata["relevance_score"] == o.score
        assert o.metadata["rerank_status"] == "ok"
        assert o.metadata["rerank_fallback_reason"] is None


def test_duplicate_ids_and_texts_do_not_error(driver, bi_scorer):
    adapter = driver.make(scorer=bi_scorer, top_n=None)
    items = [CORPUS[0], CORPUS[4], CORPUS[0]]
    out = driver.run(adapter, QUERY, driver.inputs(items, same_id=True))
    assert sorted(o.metadata["retrieval_rank"] for o in out) == [0, 1, 2]
    assert out[0].text == RELEVANT


def test_empty_input_returns_empty(driver, bi_scorer):
    assert driver.run(driver.make(scorer=bi_scorer), QUERY, []) == []


def test_blank_query_is_a_clear_error(driver, bi_scorer):
    with pytest.raises(ValueError, match="query is empty"):
        driver.run(driver.make(scorer=bi_scorer), "   ", driver.inputs(CORPUS))


# -- construction ------------------------------------------------------------------------
def test_model_setting_picks_the_scorer(driver, ce_folder):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    adapter = driver.make(model=ce_folder, device="cpu", dtype="float32", top_n=2)
    assert isinstance(adapter.reranker.scorer, CrossEncoderScorer)
    out = driver.run(adapter, QUERY, driver.inputs(CORPUS))
    assert len(out) == 2 and {o.metadata["rerank_status"] for o in out} == {"ok"}
    adapter.close()


def test_bad_settings_are_configuration_errors(driver, bi_scorer):
    with pytest.raises(ConfigurationError, match="threshold"):
        driver.make(scorer=bi_scorer, threshold=3.0)
    shared = Reranker(bi_scorer)
    with pytest.raises(ConfigurationError, match="threshold.*reranker="):
        driver.make(reranker=shared, threshold=0.5)
    with pytest.raises(ConfigurationError, match="either model= or scorer="):
        driver.make(scorer=bi_scorer, model="some/model")
    with pytest.raises(ValueError, match="topn"):
        driver.make(scorer=bi_scorer, topn=3)  # a typo is an error, not silently ignored


def test_shared_reranker_serves_two_adapters(driver, bi_scorer):
    shared = Reranker(bi_scorer, top_n=1)
    keeps_reranker_top_n = driver.make(reranker=shared)
    overrides = driver.make(reranker=shared, top_n=3)
    assert len(driver.run(keeps_reranker_top_n, QUERY, driver.inputs(CORPUS))) == 1
    out = driver.run(overrides, QUERY, driver.inputs(CORPUS))
    assert len(out) == 3
    assert {o.metadata["rerank_status"] for o in out} == {"cache"}, "one cache, shared"


# -- concurrency -------------------------------------------------------------------------
TOPICS = ["wing lift", "cat purring", "sourdough yeast", "espresso brewing",
          "great wall visibility", "coffee grounds", "bone healing", "orbit views"]


def distinct_queries(n: int) -> list[str]:
    return [f"{TOPICS[i % len(TOPICS)]} question {i}" for i in range(n)]


def assert_same_ranking(got: list[Out], want: list[Out]) -> None:
    assert len(got) == len(want)
    want_scores = {o.text: o.score for o in want}
    for o in got:
        assert o.score == pytest.approx(want_scores[o.text], abs=1e-4)
    for a, b in zip(got, want, strict=True):
        # batching may move scores by float noise; only a near-tie may swap places
        if a.text != b.text:
            assert abs(want_scores[a.text] - want_scores[b.text]) < 1e-4


def test_sixteen_threads_get_their_own_results(driver, bi_scorer):
    queries = distinct_queries(16)
    sequential = driver.make(scorer=bi_scorer, top_n=None, cache=None, timeout_s=None)
    want = {q: driver.run(sequential, q, driver.inputs(CORPUS)) for q in queries}
    adapter = driver.make(scorer=bi_scorer, top_n=None, cache=None, timeout_s=None)
    with ThreadPoolExecutor(16) as pool:
        got = dict(zip(queries, pool.map(
            lambda q: driver.run(adapter, q, driver.inputs(CORPUS)), queries), strict=True))
    for q in queries:
        assert {o.metadata["rerank_status"] for o in got[q]} == {"ok"}
        assert_same_ranking(got[q], want[q])
    assert len({tuple(o.text for o in got[q]) for q in queries}) > 1, "queries differ"


async def test_sixty_four_tasks_get_their_own_results(driver, bi_scorer):
    queries = distinct_queries(64)
    sequential = driver.make(scorer=bi_scorer, top_n=None, cache=None, timeout_s=None)
    want = {q: driver.run(sequential, q, driver.inputs(CORPUS)) for q in queries}
    adapter = driver.make(scorer=bi_scorer, top_n=None, cache=None, timeout_s=None)
    results = await asyncio.gather(
        *(driver.arun(adapter, q, driver.inputs(CORPUS)) for q in queries))
    for q, got in zip(queries, results, strict=True):
        assert {o.metadata["rerank_status"] for o in got} == {"ok"}
        assert_same_ranking(got, want[q])
    assert adapter.reranker.engine.batches_run < len(queries), \
        "concurrent tasks share forward passes"


# -- optional frameworks -----------------------------------------------------------------
BLOCKER = textwrap.dedent("""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError("blocked for the test: " + name)
            return None

    sys.meta_path.insert(0, Block())
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("module", "blocked", "extra"), [
    ("rerank_plugins.llama_index", ["llama_index"], "rerank-plugins[llama-index]"),
    ("rerank_plugins.langchain", ["langchain_core"], "rerank-plugins[langchain]"),
])
def test_adapter_without_its_framework_names_the_extra(module, blocked, extra):
    code = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(f"""
        import rerank_plugins
        assert rerank_plugins.Reranker
        try:
            import {module}
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
        else:
            print("IMPORTED")
    """)
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "IMPORT-ERROR:" in done.stdout and extra in done.stdout, done.stdout


def test_core_imports_no_framework_and_langchain_adapter_only_core():
    done = run_python(textwrap.dedent("""
        import sys
        import rerank_plugins
        frameworks = ("llama_index", "langchain")
        print("CORE", sorted({m.split('.')[0] for m in sys.modules
                              if m.startswith(frameworks)}))
        import rerank_plugins.langchain
        print("LC", sorted({m.split('.')[0] for m in sys.modules
                            if m.startswith(frameworks)}))
    """))
    assert done.returncode == 0, done.stderr
    assert "CORE []" in done.stdout
    assert "LC ['langchain_core']" in done.stdout


# -- examples ------------------------------------------------------------------------------
def test_example_apps_run_offline():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RERANK_MODEL", None)
    apps = ["llama_index_app.py", "langchain_app.py"]
    # both at once: each is mostly model loading, and the machine has two cores
    procs = {app: subprocess.Popen([sys.executable, str(root / "examples" / app)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env, cwd=root) for app in apps}
    for app, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{app} failed:\n{err[-2000:]}"
        lines = out.splitlines()
        assert lines[0] == "Q: How does a wing produce lift?", out
        assert "[ok, was #" in lines[1] and "airfoil" in lines[1], out
        assert "status ['cache']" in out, out
