# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch/torchvision pinned to the releases this project is tested with (CPU use; the wheel is a CUDA build)
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The default model on the offline default data: the DCGAN recipe on mnist-5k, 150 s of training.
run: $(STAMP)
	$(BIN)/genlab train dcgan --data mnist-5k --max-seconds 150 --out runs/default --overwrite
	@echo "samples: runs/default/samples.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache
