# Every target sets up .venv on its own: a fresh machine needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APP ?= examples.app
PROTOS := $(wildcard proto/abode/cluster/rpc/v1/*.proto)

.PHONY: run dev test chaos bench proto lint clean

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

# Joins, a rolling restart, a removal, a crash, a pause and a partition under load.
chaos: $(STAMP)
	$(BIN)/python -m pytest -q -s -m chaos tests/replication/test_chaos.py

bench: $(STAMP)
	$(BIN)/python -m bench

# protoc writes abode/cluster/rpc/v1/... (the import path); the folder is cluster/.
proto: $(STAMP)
	rm -rf build/proto && mkdir -p build/proto
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto --python_out=build/proto \
		--grpc_python_out=build/proto --mypy_out=build/proto --mypy_grpc_out=build/proto $(PROTOS)
	cp build/proto/abode/cluster/rpc/v1/*_pb2* cluster/rpc/v1/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy abode

clean:
	rm -rf $(VENV) .abode .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
