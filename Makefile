# chatstream — the two commands: `make run` and `make test`.
# Both bring up private Redis and Postgres (scripts/services.sh; apt-get
# installs them when missing) with their data under .data/.

SHELL := /bin/bash
GO    ?= go
BIN   := bin/chatstream
SERVICES := scripts/services.sh

# What `make run` serves with; override on the command line or in the env.
HTTP_ADDR ?= 127.0.0.1:8080

.PHONY: run run-cluster test build services browser node-deps stop vet bench bench-full bench-rows fuzz screenshots clean

build:
	$(GO) build -o $(BIN) ./cmd/chatstream

services:
	@$(SERVICES) up

browser:
	@scripts/chromium.sh >/dev/null

node-deps:
	@scripts/node-deps.sh

## run: start Redis + Postgres and serve chatstream with the offline demo model.
run: services build
	@eval "$$($(SERVICES) env)"; \
	export AUTH_DEV=$${AUTH_DEV:-true} HTTP_ADDR=$(HTTP_ADDR); \
	echo "chatstream: serving on http://$(HTTP_ADDR)/  (Ctrl-C stops; 'make stop' stops Redis and Postgres)"; \
	exec ./$(BIN) serve

## run-cluster: the same app as a cluster on this machine — a Redis Cluster (3 masters + 3 replicas), Postgres, two API nodes, two worker nodes and a balancer at http://127.0.0.1:8080/ (in the background; 'make stop' stops it).
run-cluster: services build
	@CHATSTREAM_BIN=$(BIN) scripts/cluster.sh up

## test: start Redis + Postgres (and install Chromium and the npm packages the tests drive), vet, and run every test with the race detector.
test: services browser node-deps
	@eval "$$($(SERVICES) env)"; \
	set -e; \
	$(GO) vet ./...; \
	$(GO) test -race -count=1 -timeout 12m ./...

vet:
	$(GO) vet ./...

## bench: Go benchmarks (append path, fan-out, frame encode/scan) and short load runs.
bench: services
	@eval "$$($(SERVICES) env)"; \
	set -e; \
	$(GO) test -run '^$$' -bench . -benchmem ./protocol ./streaming ./delivery ./llm; \
	$(GO) test -run '^$$' -bench Branch -benchtime 200x ./store; \
	$(GO) test -run '^$$' -bench CancelAcrossNodes -benchtime 30x ./integration; \
	scripts/bench.sh quick

## bench-full: the full-size load scenarios of BENCHMARKS.md (several minutes).
bench-full: services
	@scripts/bench.sh full

## bench-rows: issue 15's four fan-out rows, chatstream then the peer (Centrifugo, bench/peer), pinned, in one run.
bench-rows: services
	@scripts/bench.sh rows
	@bench/peer/run.sh

## fuzz: every fuzz target for FUZZTIME each (default 5m); BENCHMARKS.md has the counts.
fuzz:
	@scripts/fuzz.sh

## screenshots: refresh docs/screenshot-*.png from the browser test.
screenshots: services browser
	@eval "$$($(SERVICES) env)"; \
	SCREENSHOT_DIR=$(CURDIR)/docs $(GO) test -count=1 -run TestBrowser_Screenshots ./integration

## stop: stop the Redis and Postgres that `make run`/`make test` started.
stop:
	@scripts/cluster.sh down
	@$(SERVICES) down

clean: stop
	rm -rf bin .data
