# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# A second environment with prep[fast] (tokenizers 1.x), so that `make test` covers both tokenizers APIs.
FAST_VENV := .venv-fast
FAST_STAMP := $(FAST_VENV)/.installed-test

.PHONY: setup run test test-fast test-tokenizers-1 lint bench browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $@

$(FAST_STAMP): pyproject.toml
	$(PYTHON) -m venv $(FAST_VENV)
	$(FAST_VENV)/bin/pip install --quiet --upgrade pip
	$(FAST_VENV)/bin/pip install --quiet -e '.[test,fast]'
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/prep run --input sample_data/corpus --output out/sample --tokenizer sample_data/tokenizer.json \
		--overwrite

# The report's browser test needs Debian's chromium; without it (no root, no apt) that one test is skipped,
# except under PREP_NO_SKIP=1 (.ci/run), where a skipped test fails.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
		  apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
		echo "no chromium: the browser test is skipped$${PREP_NO_SKIP:+, which PREP_NO_SKIP=1 makes a failure}"

test: $(TEST_STAMP) browser
	$(BIN)/ruff check prep tests scripts
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow
	$(MAKE) test-tokenizers-1

# The quick suite and the whole-corpus backend check under tokenizers 1.x. The tiktoken converter and
# train-tokenizer need the 0.2x API (their tests run in .venv; test_backends checks what 1.x says instead).
test-tokenizers-1: $(FAST_STAMP)
	$(FAST_VENV)/bin/python -m pytest -q -m "not slow" --ignore=tests/test_tiktoken_backend.py \
		--ignore=tests/test_train_tokenizer.py
	$(FAST_VENV)/bin/python -m pytest -q -m slow tests/test_backends.py

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(TEST_STAMP)
	$(BIN)/ruff check prep tests scripts

bench: $(STAMP)
	$(BIN)/prep bench

clean:
	rm -rf out build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
