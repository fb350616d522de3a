# Two commands on a fresh machine: `make demo` and `make test`.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test chaos bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/payments demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

# The seeded campaign (every scenario x 20 seeds; failing seeds are added to
# tests/chaos_regressions.json), then the chaos-marked tests (their replay included).
# Both always run; the target fails when either did.
chaos: $(STAMP)
	$(VENV)/bin/payments chaos --seeds 20; campaign=$$?; \
	$(VENV)/bin/pytest -q -m chaos -p no:cacheprovider tests/integration; tests=$$?; \
	test $$campaign -eq 0 -a $$tests -eq 0

bench: $(STAMP)
	$(VENV)/bin/payments bench --payments 3000

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
