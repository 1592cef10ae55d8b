# Two commands a fresh machine needs: `make demo` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint typecheck contracts vectors screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check chain_lite runtime rootclient edgeroot resolver edge firmware_bridge tests bench
	$(BIN)/ruff format --check chain_lite runtime rootclient edgeroot resolver edge firmware_bridge tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict chain_lite runtime rootclient edgeroot resolver edge firmware_bridge

# The layers and chain_lite's purity (pyproject.toml [tool.importlinter]); a violation fails the build.
contracts: $(STAMP)
	$(BIN)/lint-imports

# Most of a test waits on real processes (daemons starting, brokers, blocks closing), so the suite runs
# in TEST_JOBS parallel workers (pytest-xdist, D-087); a file's tests stay together on one worker.
TEST_JOBS ?= 4

test: lint typecheck contracts
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile

demo: $(STAMP)
	$(BIN)/edgeroot demo

# Every benchmark of the project; the figures and their targets land in bench/results.md.
bench: $(STAMP)
	rm -f bench/last-run.jsonl
	$(BIN)/python bench/run.py
	$(BIN)/python bench/root.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/flood.py
	$(BIN)/python bench/peer.py
	$(BIN)/python bench/bridge.py
	$(BIN)/python bench/demo.py
	$(BIN)/python bench/anchor.py
	$(BIN)/python bench/evidence.py
	$(BIN)/python bench/epcis.py
	$(BIN)/python bench/epcis_log.py
	$(BIN)/python bench/sm2.py
	$(BIN)/python bench/referrals.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/report.py

# Regenerates tests/vectors/ from tests/vectors/generate.py (commit the result).
vectors: $(STAMP)
	$(BIN)/python tests/vectors/generate.py
	$(BIN)/python tests/vectors/sm3_merkle.py

# Retakes the README's pictures of the web pages into docs/images/ (commit the result). Needs Chromium, a
# CJK font and pngquant: apt-get install -y chromium-headless-shell fonts-noto-cjk pngquant.
screenshots: $(STAMP)
	$(BIN)/python docs/images/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
