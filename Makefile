# Entry points for people and CI. `make demo` runs the main job on a built-in default;
# `make test` runs every test (it builds the local control plane first if needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: venv cluster-bin cluster-up cluster-down test test-quick test-real-node demo crds lint gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

cluster-bin:
	bash hack/control-plane.sh install

cluster-up: venv cluster-bin
	bash hack/control-plane.sh up

cluster-down:
	bash hack/control-plane.sh down

# The whole suite, as CI runs it.
test: venv cluster-bin
	$(PY) -m pytest

# The real node's tests (root): the kubelet, containerd and runc run the project's images, in the
# node's own network namespace; the pytest process runs inside it too.
test-real-node: venv cluster-bin
	$(PY) -m litgpt_devcluster.realnode inside -- $(PY) -m pytest -m realnode tests/realnode

# The quick local loop: no slow tests, no cluster.
test-quick: venv
	$(PY) -m pytest -m "not slow and not cluster"

# What only a GPU shows (parity with transformers, a LoRA and a QLoRA step, bf16 generation, a
# 2-GPU DDP step); each check the hardware lacks is skipped with its reason (benchmarks/gpu_check.py).
gpu-check: venv
	$(PY) benchmarks/gpu_check.py

crds: venv
	$(PY) -m litgpt_operator.generate
	$(PY) hack/sync-chart-crds.py

demo: venv
	bash hack/demo.sh
