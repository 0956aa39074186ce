# geopeft: the user's verbs. Every target is a thin call of the `geopeft` CLI inside .venv.
# `make setup` is implied by every other target, so `make demo` and `make test` work on a fresh clone.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
GRID     ?= sweeps/demo.yaml
CLUSTER  ?= local
STATE    ?= failed
export HDF5_USE_FILE_LOCKING := FALSE

.PHONY: setup demo weights sweep status rerun tables report test lint fmt bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/python -m hpc.demo

# Run where the internet is (the login node): fetches every pretrained weights file the grid's cells load.
weights: setup
	$(BIN)/geopeft weights fetch --grid $(GRID)

sweep: setup
	$(BIN)/geopeft sweep $(GRID) --cluster $(CLUSTER)

status: setup
	$(BIN)/geopeft status $(GRID)

rerun: setup
	$(BIN)/geopeft rerun $(GRID) --$(STATE)

tables: setup
	$(BIN)/geopeft tables $(GRID)

# One PDF with every table and figure (<sweep>/tables/report.pdf); without LaTeX it writes the .tex.
report: setup
	$(BIN)/geopeft report $(GRID)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# pytest exits 5 when it collected no test: that is a failure here, never a quiet pass.
test: lint
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs data .pytest_cache .mypy_cache .ruff_cache
