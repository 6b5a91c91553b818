# Two entry points, both idempotent, both using the virtual environment .venv in this folder:
#   make demo   set up, then train + evaluate a small ViG on the embedded Fashion-MNIST subset
#   make test   set up (with the torch-cluster / torch-scatter, export and detection extras), then run the tests
#   make detect-demo   set up (detection extra), then train + score a small ViG RetinaNet on canvases
# TORCH_SPEC is PyPI's default build (CUDA-enabled, runs on CPU too), the one `pip install torch` gives and
# the one PyPI's torchvision wheels load beside; timm and torchvision are part of the base set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo detect-demo test ops lint clean-venv

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[timm]'
	touch $@

# The test, export and detection extras (pytest, ruff, onnx, onnxscript, onnxruntime, pycocotools).
$(VENV)/.extras: $(VENV)/.base
	$(PY) -m pip install -q -e '.[test,export,detection]'
	touch $@

# torch-scatter / torch-cluster have no wheels for every torch build: they compile from source
# against the installed torch (a few minutes each; pip caches the wheels afterwards).
$(VENV)/.cluster: $(VENV)/.extras
	$(PY) -m pip install -q --no-build-isolation torch-scatter torch-cluster
	touch $@

# The compiled CPU operators (pyg_vig/ops, k-NN selection and gather-reduce) are built just in
# time on first use and cached; building them here keeps that out of the timed runs, and fails
# loudly if the compiler is missing (the package itself would fall back to pure torch).
ops: $(VENV)/.base
	$(PY) -m pyg_vig.ops --build

# Two single-threaded data-parallel processes (torchrun, gloo) instead of one process with 2
# intra-op threads, whose per-op thread sync stalls whenever anything else wants a core (on a busy
# 2-core machine: 375 vs 60 img/s). `$(PY) -m pyg_vig train --demo` runs the same recipe in one.
# The full Fashion-MNIST test set (10,000 images) for the demo's second score: Debian's
# dataset-fashion-mnist, installed system-wide, or else downloaded by apt-get (no root needed)
# and unpacked into .data/. Best effort: without it the demo scores the embedded 5,000-image subset.
FMNIST_SYSTEM := /usr/share/datasets/fashion-mnist
FMNIST_LOCAL := .data/fashion-mnist
$(FMNIST_LOCAL):
	@if [ -d $(FMNIST_SYSTEM) ]; then exit 0; fi; \
	tmp=$$(mktemp -d); \
	if (cd $$tmp && apt-get download -q dataset-fashion-mnist >/dev/null 2>&1 \
	    && dpkg-deb -x dataset-fashion-mnist_*.deb x); then \
	  mkdir -p .data && mv $$tmp/x$(FMNIST_SYSTEM) $@ && echo "full Fashion-MNIST in $@"; \
	else echo "note: could not fetch Debian's dataset-fashion-mnist; the demo scores the subset only"; fi; \
	rm -rf $$tmp

demo: $(VENV)/.base ops $(FMNIST_LOCAL)
	$(PY) -m torch.distributed.run --standalone --nproc_per_node=2 -m pyg_vig train --demo \
	  $$([ -d $(FMNIST_LOCAL) ] && echo --full-test $(FMNIST_LOCAL))

# The detection demo (README, docs/detection.md): Fashion-MNIST canvases written once to
# ~/.cache/pyg_vig/detect_canvases, then a small randomly initialised pyramid ViG RetinaNet
# trained on them from scratch, two single-threaded data-parallel processes as in `demo`.
detect-demo: $(VENV)/.extras ops
	$(PY) -m torch.distributed.run --standalone --nproc_per_node=2 -m pyg_vig detect train --demo

test: $(VENV)/.cluster ops
	PYG_VIG_REQUIRE_OPS=1 $(PY) -m pytest -q --durations=20 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(VENV)/.extras
	$(PY) -m ruff check pyg_vig tests benchmarks examples

clean-venv:
	rm -rf $(VENV)
