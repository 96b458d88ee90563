# Every target sets up .venv on its own: a fresh machine needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APP ?= examples.app
PROTOS := $(wildcard proto/cluster/rpc/v1/*.proto)

.PHONY: run dev test bench proto lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing abode and its dev dependencies into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# A local cluster: etcd, 3 nodes and 2 routers on loopback (first router on :8787).
run: $(STAMP)
	$(BIN)/abode up $(APP)

# One process, one node and one router: for writing and trying an app.
dev: $(STAMP)
	$(BIN)/abode dev $(APP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

proto: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. \
		--grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy cluster node router

clean:
	rm -rf $(VENV) .abode .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
