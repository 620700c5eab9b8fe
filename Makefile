# hf_nanogpt developer entry points. Everything runs inside a local virtual environment (.venv)
# so a fresh clone needs nothing but python3 and make:
#   make speedrun   # tokenizer -> pretrain -> mid-train -> SFT -> evals -> report, tiny recipe, CPU
#   make test       # the test suite (the command CI runs)
# Override the interpreter with `make PY=python test` to use an environment you manage yourself.

BOOT_PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
# Installed only when torch is missing: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
RECIPE ?= tiny
PYTEST_ARGS ?=

.PHONY: install install-browser install-sandbox test test-fast test-compat test-hf-common speedrun bench clean

$(VENV)/bin/python:
	$(BOOT_PYTHON) -m venv $(VENV)

# The stamp makes `install` idempotent: it re-runs only when setup.cfg changes.
.install.stamp: setup.cfg | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev,serve]"
	touch $@

# Debian Chromium + ChromeDriver for the web UI test; needs root (CI runs as root).
install-browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	  else echo "note: chromium/chromedriver missing and not root: the browser test will be skipped"; fi; }

# Debian bubblewrap: the HumanEval sandbox's namespaces (hf_nanogpt/evaluation/sandbox.py); needs root.
# Without it the sandbox falls back to a weaker level and says so in every result.
install-sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -q && apt-get install -y -q --no-install-recommends bubblewrap; \
	  else echo "note: bubblewrap missing and not root: the code sandbox runs at a weaker isolation level"; fi; }

install: .install.stamp install-browser install-sandbox

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

speedrun: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/speedrun.sh $(RECIPE)

bench: install
	$(PY) scripts/bench.py all

clean:
	rm -rf $(VENV) .compat .hf_tests .install.stamp .pytest_cache build dist *.egg-info

# The model must work on every transformers release setup.cfg allows (5.17 to 5.24): `make test` runs the
# full suite on the newest (what a fresh install gets); this runs the model tests against the oldest,
# installed side by side under .compat/ (not into the venv).
COMPAT_TRANSFORMERS ?= 5.17.0
test-compat: install
	@[ -d .compat/$(COMPAT_TRANSFORMERS)/transformers ] || $(PY) -m pip install -q --no-deps \
	  --target .compat/$(COMPAT_TRANSFORMERS) "transformers==$(COMPAT_TRANSFORMERS)" "huggingface_hub>=1.5,<2"
	PYTHONPATH=.compat/$(COMPAT_TRANSFORMERS) $(PY) -m pytest -q -p no:cacheprovider \
	  tests/test_modeling_nanogpt.py tests/test_configuration_nanogpt.py tests/test_compat_nanogpt.py \
	  tests/test_cache_nanogpt.py tests/test_convert_nanochat.py tests/test_engine.py \
	  tests/test_loss_nanogpt.py tests/test_moe_nanogpt.py tests/test_mamba_nanogpt.py

# transformers' own common model tests (ModelTesterMixin) for the installed release: its sdist is fetched
# from PyPI into .hf_tests/ (see tests/hf_common/fetch.py). Our pytest options (strict markers) are not
# theirs, hence the empty addopts.
test-hf-common: install
	PYTHONPATH=$$($(PY) tests/hf_common/fetch.py .hf_tests) $(PY) -m pytest -q -p no:cacheprovider -o addopts="" \
	  tests/hf_common/nanogpt_common.py
