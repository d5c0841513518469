# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup run test test-fast lint bench browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,ray]'
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

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(TEST_STAMP)
	$(BIN)/ruff check prep tests scripts

bench: $(STAMP)
	$(BIN)/prep bench

clean:
	rm -rf out build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
