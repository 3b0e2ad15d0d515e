# Deep Generative Models course: set-up, lab, website, tests.
#   make setup   virtual environment, pinned packages, data, vendored MathJax (idempotent)
#   make lab     JupyterLab on the notebooks
#   make book    the website, at book/_build/html/index.html
#   make test    lint, unit tests, kernel tests, nbval over every notebook (twice), book, browser,
#                nbgrader pipeline, JupyterLab in a browser
#   make test-fast  unit tests only (no nbval, book, browser or Lab; tests marked slow deselected)
#   make lint    ruff (lint and format) and mypy over dgmlib
#   make gpu     on a CUDA machine: CUDA tests, GPU kernel benchmark, one epoch (benchmarks/gpu.sh)
#   make test-notebooks  nbval only, under both kernel configurations (NB=... for one notebook)
#   make sync    pair every notebooks/*.py with its .ipynb (Jupytext)
#   make execute re-run notebooks and store their outputs (NB=notebooks/01_lvm_elbo.py for one)
#   make student write the student edition (solutions replaced by stubs) to student/
#   make homework write homework/, an nbgrader course (source/ with grading metadata, release/)
#   make checkpoints  re-train the small models that lectures load from data/checkpoints/ (slow)
#   make clean   remove build outputs (not the environment: make distclean)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := dataset-fashion-mnist chromium

export DGMLIB_THREADS ?= 2


.PHONY: setup system-packages data mathjax lab book test test-fast test-notebooks lint gpu sync execute student homework checkpoints lock clean distclean

setup: $(STAMP) system-packages data mathjax

# Debian packages: installed when apt is available and we are root; otherwise print the command.
system-packages: $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "note: Debian packages missing:$$missing"; \
	  echo "      install them with: sudo apt-get install$$missing"; \
	  echo "      meanwhile Fashion-MNIST is downloaded and checked, and the browser test uses"; \
	  echo "      Playwright's own Chromium"; \
	  case "$$missing" in *chromium*) \
	    $(VENV)/bin/playwright install chromium || echo "note: no browser for the browser test";; \
	  esac; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

data: $(STAMP) system-packages
	@$(PY) -c "from dgmlib.data import load_fashion_mnist as f; f('train'); f('test')" \
	  && echo "Fashion-MNIST found and verified"

mathjax: $(STAMP)
	@$(PY) tools/vendor_mathjax.py

# JupyterLab refuses to run as root without --allow-root (e.g. in a container).
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

book: setup
	$(PY) tools/build_book.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The README's test command. Notebook cells stay together on one worker (--dist loadfile).
# The notebooks run twice: under this CPU's default kernels, then under torch's generic kernels
# on one thread, a stand-in for a learner's other CPU (the stored outputs must match both).
NBVAL := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -n 2 --dist loadfile -p no:cacheprovider
test: setup lint
	$(VENV)/bin/pytest tests notebooks $(NBVAL)
	ATEN_CPU_CAPABILITY=default DGMLIB_THREADS=1 $(VENV)/bin/pytest notebooks $(NBVAL)

# The unit tests alone, for a quick answer while editing: no nbval, no book, no browser, no Lab,
# and the tests marked slow (fresh processes, memory measurements, code generation, nbgrader
# runs) deselected.
FAST := -m "not slow and not book and not cuda and not lab" -n 2 -p no:cacheprovider
test-fast: $(STAMP)
	$(VENV)/bin/pytest tests $(FAST) --ignore=tests/test_book.py --ignore=tests/test_browser.py \
	  --ignore=tests/test_lab.py

# On a machine with a CUDA GPU: the CUDA-only tests, the GPU half of benchmarks/kernels.py and one
# training epoch on the GPU, into benchmarks/results/gpu.json; elsewhere it says so and exits 0.
gpu: setup
	bash benchmarks/gpu.sh

# nbval over the notebooks only, under both configurations (NB=notebooks/05_iwae.ipynb for one).
test-notebooks: setup
	$(VENV)/bin/pytest $(or $(NB),notebooks) $(NBVAL)
	ATEN_CPU_CAPABILITY=default DGMLIB_THREADS=1 $(VENV)/bin/pytest $(or $(NB),notebooks) $(NBVAL)

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/[0-9A]*.py

execute: $(STAMP)
	$(PY) tools/execute_notebooks.py $(NB)

student: $(STAMP)
	$(PY) tools/make_student.py --out student

# An nbgrader course directory for instructors: then, from inside homework/, `nbgrader autograde
# NN_topic`, `nbgrader generate_feedback NN_topic`, `nbgrader export` (see the README).
homework: $(STAMP)
	$(PY) tools/make_homework.py --out homework

# Deterministic (seeded, fixed threads, fixed data order) training scripts, one per lecture that
# needs one; each writes NAME.safetensors + NAME.safetensors.sha256 (+ a JSON of results).
checkpoints: $(STAMP) data
	@for script in tools/train_lecture*.py; do \
	  echo "== $$script"; $(PY) $$script || exit 1; done
	$(PY) tools/train_lecture05.py --long

lock: $(STAMP)
	$(PY) tools/lock.py

clean:
	rm -rf book/_build student .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) book/_vendor
