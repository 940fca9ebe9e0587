# make test: set up .venv (if missing), `make lint` (ruff check and format check), then pytest.
# make demo: same set-up, then the whole job on the synthetic dataset.
# make clean: the venv, build and cache files; never runs/ (trained runs) or saved_models/ (exports).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: lint test demo clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

test: $(STAMP) lint
	$(VENV)/bin/python -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/tf-frcnn demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find tf_frcnn tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +
	@echo "kept runs/ and saved_models/: trained runs and exports are deleted by hand"
