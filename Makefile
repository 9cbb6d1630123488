# Everything a fresh machine needs. `make demo` and `make test` do all set-up themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# empty: pip's own indexes (here a local CPU wheel). Where PyPI would give the CUDA build, set it to the PyTorch
# CPU index: make TORCH_INDEX=https://download.pytorch.org/whl/cpu demo
TORCH_INDEX ?=
SYS_LIBS := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
	libdbus-1-3 libfontconfig1

.PHONY: demo test lint sysdeps venv benchmark screenshots clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU wheel on this machine (or from TORCH_INDEX); a GPU user installs their own torch first.
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[napari,test]"
	touch $@

venv: $(BIN)/.installed

# napari needs OpenGL and X libraries; install them (Debian/Ubuntu, as root) only when missing.
sysdeps:
	@missing=""; for p in $(SYS_LIBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing system libraries:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing system libraries for napari:$$missing (GUI tests need them)"; fi; \
	fi

demo: venv
	$(BIN)/crl-napari demo --out demo-run

test: venv sysdeps
	$(BIN)/ruff check crl_napari tests benchmarks
	xvfb-run -a -s "-screen 0 1280x1024x24" $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check crl_napari tests benchmarks

benchmark: venv
	$(BIN)/python benchmarks/table1.py --profile quick

screenshots: venv sysdeps
	xvfb-run -a -s "-screen 0 1280x1024x24" $(BIN)/python docs/make_screenshots.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache
