# One-command set-up on a fresh Debian 12 machine; every target is idempotent.
#   make test   set up, then run the test suite
#   make demo   set up, then collect a tiny store and train on it end to end
#   make lerobot-env   LeRobot 0.4.4's reader in .venv-lerobot (tests/test_lerobot.py builds it when missing)
# A GPU machine may bring its own torch: make setup TORCH="torch==2.13.0 --index-url <your CUDA index>"
VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.f1-installed

.PHONY: setup system venv lerobot-env test demo bench clean

setup: system venv

system:
	bash scripts/install_system_deps.sh

venv: $(STAMP)

# torch first, pinned, so that the CPU wheel on these machines is picked up and
# nothing later pulls a CUDA build; then the package with its dev and ray extras (the tests run a local Ray).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,ray]"
	touch $(STAMP)

lerobot-env: venv
	bash scripts/lerobot_env.sh $(VENV) .venv-lerobot

test: setup
	$(VENV)/bin/pytest -q tests

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-lerobot demo_out .pytest_cache
