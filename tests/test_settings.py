"""One settings type, reachable from every entry point.

Each test enumerates :class:`RerankerSettings` (or the ``Reranker`` signature built
from it), so a new setting that an adapter, the config file or the signature misses
fails here rather than in a user's app.
"""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
from cheap_scorers import CrcScorer

from rerank_plugins import Reranker, RerankerSettings
from rerank_plugins import settings as settings_module
from rerank_plugins.config import CONFIG_KEYS, load_settings, write_settings
from rerank_plugins.errors import ConfigurationError
from rerank_plugins.langchain import CrossEncoderRerank as LangChainRerank
from rerank_plugins.llama_index import CrossEncoderRerank as LlamaIndexRerank

#: Adapter defaults that differ from the core on purpose (each peer's own default).
ADAPTER_DEFAULTS = {
    LlamaIndexRerank: {"top_n": 2, "trust_remote_code": True},  # SentenceTransformerRerank
    LangChainRerank: {"top_n": 3},  # CrossEncoderReranker
}

#: A non-default plain value per setting that a file or an adapter can carry.
NON_DEFAULTS = {
    "model": None, "device": "cpu", "dtype": "float32", "max_length": 128,
    "trust_remote_code": True, "backend": "torch", "compile_cache_dir": "/tmp/rp-compiled",
    "exact_top": 0, "exact_head": 5, "exact_band_scale": 3.0, "embedding_store": None,
    "timeout_s": 0.25, "secondary_scorer": None,
    "cache": None, "breaker": {"failure_threshold": 2, "reset_timeout_s": 1.5},
    "max_candidates": 77, "max_inference_threads": 3, "max_pending": 9,
    "stuck_after_s": 4.0, "top_n": 7, "threshold": 0.3, "min_keep": 2,
    "relative_cutoff": 0.4, "fusion": "rrf", "alpha": 0.7, "normalization": "rank",
    "calibration": None, "shadow": True, "rerank_depth": 11, "event_log": None,
    "include_text": True, "variants": {"candidate": "/models/next"},
    "split": {"candidate": 0.05}, "variant_mode": "shadow_compare",
    "semantic_cache": False, "semantic_threshold": 0.9,
    "context_tokens": 500, "context_tokenizer": None, "context_truncate_last": True,
}


def signature_settings() -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(Reranker).parameters)
    assert list(params)[:2] == ["scorer", "settings"]
    return {name: p for name, p in params.items() if name not in ("scorer", "settings")}


def test_the_reranker_signature_is_the_settings_type():
    params = signature_settings()
    assert tuple(params) == settings_module.names()
    for spec in settings_module.specs():
        assert params[spec.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[spec.name].default == settings_module.default_of(spec)
        assert spec.metadata["doc"] and spec.name in Reranker.__doc__


@pytest.mark.parametrize("adapter", [LlamaIndexRerank, LangChainRerank],
                         ids=["llama_index", "langchain"])
def test_every_setting_is_a_documented_field_of_both_adapters(adapter):
    fields = adapter.model_fields
    for name, param in signature_settings().items():
        assert name in fields, f"{adapter.__module__} misses the setting {name}"
        expected = ADAPTER_DEFAULTS[adapter].get(name, param.default)
        assert fields[name].default == expected, name
        assert fields[name].description, name
    # and help() shows them (pydantic builds the signature from the fields)
    shown = inspect.signature(adapter).parameters
    assert set(signature_settings()) <= set(shown)


def test_every_plain_setting_is_in_the_config_schema():
    for name in signature_settings():
        if name in settings_module.NOT_IN_CONFIG_FILE:
            continue
        assert name in CONFIG_KEYS, f"the settings file cannot hold {name}"
    assert set(NON_DEFAULTS) == set(CONFIG_KEYS), "NON_DEFAULTS must cover the schema"


def test_a_settings_file_round_trips_every_field(tmp_path):
    changed = RerankerSettings(**NON_DEFAULTS)
    path = tmp_path / "settings.json"
    write_settings(path, changed, keys=CONFIG_KEYS)
    on_disk = json.loads(path.read_text())["reranker"]
    assert set(on_disk) == set(CONFIG_KEYS)
    assert load_settings(path) == changed


@pytest.mark.parametrize("adapter", [LlamaIndexRerank, LangChainRerank],
                         ids=["llama_index", "langchain"])
def test_every_setting_given_to_an_adapter_reaches_its_reranker(adapter):
    values = {k: v for k, v in NON_DEFAULTS.items() if k != "model"}
    values["variants"] = {"candidate": CrcScorer("crc-v2")}  # an object: nothing to load
    rerank = adapter(scorer=CrcScorer(), **values)
    try:
        for name, value in values.items():
            assert getattr(rerank.reranker.settings, name) == value, name
    finally:
        rerank.close()


@pytest.mark.parametrize("adapter", [LlamaIndexRerank, LangChainRerank],
                         ids=["llama_index", "langchain"])
def test_a_settings_file_configures_an_adapter_and_explicit_values_win(adapter, tmp_path):
    path = tmp_path / "tuned.json"
    write_settings(path, RerankerSettings(fusion="rrf", alpha=0.3, top_n=4, timeout_s=0.5))
    rerank = adapter(scorer=CrcScorer(), config=str(path), alpha=0.9)
    try:
        settings = rerank.reranker.settings
        assert (settings.fusion, settings.alpha, settings.timeout_s) == ("rrf", 0.9, 0.5)
        assert rerank.top_n == 4
    finally:
        rerank.close()


def test_reranker_from_config_and_overrides(tmp_path):
    path = tmp_path / "tuned.json"
    write_settings(path, RerankerSettings(threshold=0.4, rerank_depth=20))
    reranker = Reranker.from_config(path, scorer=CrcScorer(), min_keep=0)
    try:
        assert (reranker.settings.threshold, reranker.settings.rerank_depth,
                reranker.settings.min_keep) == (0.4, 20, 0)
    finally:
        reranker.close()


def test_renamed_settings_still_work_with_a_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="timeout_ms is deprecated; use timeout_s"):
        reranker = Reranker(CrcScorer(), timeout_ms=250)
    assert reranker.settings.timeout_s == 0.25
    reranker.close()
    with pytest.warns(DeprecationWarning, match="timeout_ms"):
        rerank = LangChainRerank(scorer=CrcScorer(), timeout_ms=1500)
    assert rerank.reranker.settings.timeout_s == 1.5
    rerank.close()
    legacy = tmp_path / "legacy.json"  # what `eval --tune` wrote before the rename
    legacy.write_text(json.dumps({"schema_version": 1, "model": None, "reranker": {
        "fusion": "linear", "alpha": 0.5, "normalization": "minmax", "threshold": None,
        "candidate_depth": 50}}))
    with pytest.warns(DeprecationWarning, match="candidate_depth"):
        assert load_settings(legacy).rerank_depth == 50
    with pytest.raises(ConfigurationError, match="not both"):
        Reranker(CrcScorer(), timeout_ms=1, timeout_s=1)


@pytest.mark.parametrize("bad, message", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": True}, "threshold"),
    ({"timeout_s": 0}, "timeout_s"), ({"top_n": 0}, "top_n"), ({"min_keep": -1}, "min_keep"),
    ({"fusion": "borda"}, "fusion"), ({"rerank_depth": 0}, "rerank_depth"),
    ({"max_pending": 0}, "max_pending"), ({"colour": "red"}, "unknown setting"),
    ({"breaker": 5}, "breaker"), ({"breaker": {"bogus": 1}}, "breaker settings"),
    ({"split": {"candidate": 0.1}}, "not in variants"),
    ({"variants": {"b": CrcScorer()}, "split": {"b": 1.5}}, "split shares"),
    ({"variant_mode": "canary"}, "variant_mode"),
])
def test_bad_settings_fail_the_same_way_everywhere(bad, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigurationError, match=message):
            Reranker(CrcScorer(), **bad)
        if "colour" in bad:
            return  # pydantic's own extra="forbid" answers for the adapters
        for adapter in (LlamaIndexRerank, LangChainRerank):
            with pytest.raises(ConfigurationError, match=message):
                adapter(scorer=CrcScorer(), **bad)


def test_settings_objects_are_immutable_and_replace_revalidates():
    settings = RerankerSettings(top_n=3)
    with pytest.raises(AttributeError):
        settings.top_n = 4  # type: ignore[misc]
    assert settings.replace(top_n=4).top_n == 4 and settings.top_n == 3
    with pytest.raises(ConfigurationError):
        settings.replace(alpha=2.0)
    assert RerankerSettings(top_n=3).changed() == {"top_n": 3}


def test_the_docs_settings_table_is_the_generated_one():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "settings.md").read_text(encoding="utf-8")
    start = text.index("-->\n") + len("-->\n")
    end = text.index("\n<!-- end generated -->")
    assert text[start:end] == settings_module.markdown_table(), (
        "docs/settings.md is stale: run `make generate`")
