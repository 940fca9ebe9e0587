# make test: set up .venv (if missing), `make lint` (ruff check and format check), then pytest.
# make demo: same set-up, then the whole job on the synthetic dataset.
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
	rm -rf runs saved_models/*/ $(VENV)
