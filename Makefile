# Two commands do all set-up on a fresh machine (see README):
#   make test   lint + the whole test suite (every chapter executed with CI parameters)
#   make book   execute every chapter on the embedded corpus and build the HTML book
#   make nbval  pytest --nbval-lax on the chapters with their CI parameters (ONLY=04: one)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The pages' MathJax, require.js and widget manager, pinned (scripts/vendor_js.py)
VENDORED := _vendor/versions.json
# Debian's Chromium, which the browser test drives (never a browser Playwright downloads)
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test book clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $(STAMP)

$(VENDORED): scripts/vendor_js.py $(STAMP)
	$(BIN)/python scripts/vendor_js.py
	touch $(VENDORED)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "no apt-get: install Chromium at $(CHROMIUM) for the browser test"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

setup: $(STAMP) $(VENDORED)

test: $(STAMP) $(VENDORED) $(CHROMIUM)
	$(BIN)/ruff check speechul tests scripts benchmarks book/assignments/grader.py
	$(BIN)/python -m pytest -ra

# jupyter-book's execution cache keys a chapter on its code cells only: when the package or the
# pinned versions change, drop the cache so every chapter (and its check cell) runs again.
SOURCES_SUM = cat pyproject.toml constraints.txt $$(find speechul -name '*.py' | sort) | sha256sum
BUILT_WITH := _build/.speechul-sources

book: $(STAMP) $(VENDORED)
	$(BIN)/python scripts/notebooks.py --check
	@if [ "$$($(SOURCES_SUM))" != "$$(cat $(BUILT_WITH) 2>/dev/null)" ] && [ -d _build/.jupyter_cache ]; then \
		echo "speechul or its pinned versions changed since the last build: every chapter runs again"; \
		rm -rf _build/.jupyter_cache; fi
	SPEECHUL_QUIET=1 SPEECHUL_CLAIMS=strict $(BIN)/jupyter-book build . --all
	$(SOURCES_SUM) > $(BUILT_WITH)

# The student edition of the rendered book (solutions removed), from the outputs `make book`
# executed: the execution cache is copied, so no chapter runs again. Pages: _build/student/_build/html
.PHONY: student-book
student-book: $(STAMP) $(VENDORED)
	sed 's/hide_solutions: false/hide_solutions: true/' _config.yml > _config.student.yml
	mkdir -p _build/student/_build && rm -rf _build/student/_build/.jupyter_cache
	if [ -d _build/.jupyter_cache ]; then cp -r _build/.jupyter_cache _build/student/_build/; fi
	SPEECHUL_QUIET=1 SPEECHUL_CLAIMS=strict $(BIN)/jupyter-book build . --config _config.student.yml \
		--path-output _build/student; status=$$?; rm -f _config.student.yml; exit $$status

# After editing a chapter: pytest --nbval-lax on it with its CI parameters (every cell a test, a
# failing check fails), notebooks written to _build/nbval/. One chapter: make nbval ONLY=04
.PHONY: nbval
nbval: $(STAMP)
	$(BIN)/python scripts/nbval_notebooks.py $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf _build
