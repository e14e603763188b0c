# `make demo` and `make test` each set up .venv from nothing, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= results

.PHONY: demo test lint format setup clean

# torchattacks and advertorch are reference implementations the tests compare against (the
# DGAD authors evaluated with advertorch); torchattacks' metadata pins an old requests it does
# not need, and advertorch needs nothing the project lacks, hence --no-deps.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0" "torchvision==0.28.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps "torchattacks==3.5.1" "advertorch==0.2.3"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bench run --method dgad --grid smoke --store $(STORE)
	$(BIN)/bench leaderboard --grid smoke --store $(STORE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(STORE)
