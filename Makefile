# distillguard: `make run` serves on the embedded default config, `make test`
# runs the whole suite. Everything else here is optional.
SHELL := /bin/bash
GO ?= go
BIN := bin
CORPUS ?= $(abspath ../shared/data)
export DISTILLGUARD_CORPUS ?= $(CORPUS)
# Every build and test compiles go-control-plane's generated vtprotobuf
# marshallers in (extproc.Codec writes replies with them). Without the tag
# the same bytes are written by protobuf-go, slower.
export GOFLAGS += -tags=vtprotobuf

.PHONY: all build run test test-short fuzz bench bench-micro bench-smoke bench-replicated lab e2e lint check-config clean \
	tools test-deploy helm-lint helm-template image demo-replicas

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run:
	$(GO) run ./cmd/distillguard

check-config:
	$(GO) run ./cmd/distillguard -check-config $(if $(CONFIG),-config $(CONFIG))

# The whole suite, race detector on. CI runs exactly this: the external
# tools first (installed when missing and running as root), the server
# module, then the deploy module (image, chart, rules, dashboard).
test: tools
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory test-deploy

# promtool and redis-server (Debian packages); see scripts/ensure-tools.sh.
tools:
	@bash scripts/ensure-tools.sh

# deploy/ is its own Go module (Kubernetes, Envoy Gateway, Istio, Prometheus
# and Helm types stay out of the server's go.mod). Helm is the CLI pinned by
# deploy/go.mod's tool directive.
HELM_CMD := cd deploy && $(GO) tool helm
CHART := helm/distillguard
test-deploy: helm-lint
	cd deploy && $(GO) vet ./...
	cd deploy && $(GO) test -race -count=1 -timeout 15m ./...

helm-lint:
	$(HELM_CMD) lint --strict $(CHART)
	$(HELM_CMD) lint --strict $(CHART) -f helm/testdata/all-on.yaml
	$(HELM_CMD) template distillguard $(CHART) --namespace distillguard >/dev/null
	$(HELM_CMD) template distillguard $(CHART) --namespace distillguard -f helm/testdata/all-on.yaml >/dev/null

# Rendered manifests with the defaults (VALUES=file for others).
helm-template:
	@$(HELM_CMD) template distillguard $(CHART) --namespace distillguard $(if $(VALUES),-f $(abspath $(VALUES)))

# The container image without a daemon: an OCI layout in image-out/oci and a
# `docker load` tarball (the Dockerfile builds the same image with docker).
IMAGE_TAG ?= distillguard:dev
image:
	cd deploy && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) \
	  $(GO) run ./image -root .. -o ../image-out/oci -tarball ../image-out/distillguard.tar \
	    -tag $(IMAGE_TAG) -revision "$$(git rev-parse HEAD 2>/dev/null)"

test-short:
	$(GO) test -short -count=1 ./...

# Short coverage-guided runs of every fuzz target (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done
	@set -e; cd deploy; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# The latency matrix: distillguard against a no-op processor, alternating
# rounds, both as child processes. Writes bench-out/{results.md,results.json,*.svg}.
bench:
	$(GO) build -o $(BIN)/ ./cmd/distillguard ./cmd/distillguard-bench
	$(BIN)/distillguard-bench run -distillguard $(BIN)/distillguard -out bench-out

# Replicated mode (Redis) against in-memory scoring: request-headers and
# request-body latency, Redis commands per request. Starts its own
# redis-server (Debian: apt-get install -y redis-server) unless REDIS is set.
REDIS ?=
RATE ?= 0
bench-replicated:
	$(GO) build -o $(BIN)/ ./cmd/distillguard ./cmd/distillguard-bench
	$(BIN)/distillguard-bench replicated -distillguard $(BIN)/distillguard -out bench-out -rate $(RATE) $(if $(EXCHANGE_RATE),-exchange-rate $(EXCHANGE_RATE)) $(if $(REDIS),-redis $(REDIS)) $(if $(ROUNDS),-rounds $(ROUNDS)) $(if $(WRITE_DELAY),-write-delay $(WRITE_DELAY)) $(if $(FLOOR),-read-floor)

# Go micro-benchmarks; compare runs with benchstat.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./mutate/ ./extproc/ ./scoring/ ./bench/

# A few seconds of every scenario; fails if any message errors (also part of make test).
bench-smoke:
	$(GO) test -race -count=1 -run 'TestSmoke|TestMatrixAA|TestRunCommand' -v ./bench/ ./cmd/distillguard-bench/

# The attack lab: detection replay through the real server, the
# Tramer / Carlini / distillation experiments, and the same attacks end to
# end against the whole server (economics). Writes lab-out/lab-report.md
# and SVG plots, then prints the attacker cost multiples. SEED and SCALE
# are forwarded.
# EXPERIMENTS picks experiments (default: all but detection-replicas);
# REPLICAS=3 replays detection over 3 replicas sharing Redis round-robin
# per request, and EXPERIMENTS=detection-replicas REPLICAS=1,3,5 compares
# the counts. REDIS=host:port uses that Redis (default: a redis-server
# started for the run).
SEED ?= 1
SCALE ?= 1
EXPERIMENTS ?=
REPLICAS ?=
lab:
	$(GO) run ./cmd/distillguard-lab -corpus $(CORPUS) -seed $(SEED) -scale $(SCALE) -out lab-out \
	  $(if $(EXPERIMENTS),-experiments $(EXPERIMENTS)) $(if $(REPLICAS),-replicas $(REPLICAS)) $(if $(REDIS),-redis $(REDIS))
	@awk '/^### Attacker cost multiple/{p=1} p{print} p&&/^Configuration /{p=0; print ""}' lab-out/lab-report.md

# Replicated mode, locally: a redis-server on DEMO_REDIS_PORT and three
# distillguard replicas sharing it (gRPC :50061-50063, admin :9091-9093),
# as behind envoy/envoy-replicas.yaml. Ctrl-C stops everything. With
# REPLAY=1 it replays the labelled week over the three round-robin per
# request (report in $(DEMO_DIR)/lab-with-redis), then stops Redis and
# puts load on each replica: they keep answering, on local state.
DEMO_REDIS_PORT ?= 6390
DEMO_DIR ?= $(abspath $(BIN)/demo-replicas)
REPLAY ?=
demo-replicas: build
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || { echo "demo-replicas: redis-server is not installed (Debian: apt-get install -y redis-server)"; exit 1; }
	@set -e; mkdir -p $(DEMO_DIR); \
	printf 'scoring:\n  secret: demo-replicas-secret-0123456789abcdef\n  redis:\n    addrs: ["127.0.0.1:$(DEMO_REDIS_PORT)"]\nlog:\n  level: warn\n' > $(DEMO_DIR)/replica.yaml; \
	pids=""; trap 'kill $$pids 2>/dev/null; wait 2>/dev/null' EXIT INT TERM; \
	redis-server --port $(DEMO_REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no --dir $(DEMO_DIR) --logfile $(DEMO_DIR)/redis.log & rpid=$$!; pids="$$pids $$rpid"; \
	for t in $$(seq 50); do redis-cli -p $(DEMO_REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	for i in 1 2 3; do \
	  $(BIN)/distillguard -config $(DEMO_DIR)/replica.yaml -grpc-addr 127.0.0.1:5006$$i -admin-addr 127.0.0.1:909$$i 2> $(DEMO_DIR)/replica-$$i.log & pids="$$pids $$!"; \
	done; sleep 1; \
	echo "redis 127.0.0.1:$(DEMO_REDIS_PORT); replicas 127.0.0.1:50061-50063 (metrics: curl 127.0.0.1:9091/metrics | grep distillguard_redis)"; \
	if [ -n "$(REPLAY)" ]; then \
	  $(BIN)/distillguard-lab -corpus $(CORPUS) -seed $(SEED) -scale $(SCALE) -experiments detection -addr 127.0.0.1:50061,127.0.0.1:50062,127.0.0.1:50063 -out $(DEMO_DIR)/lab-with-redis; \
	  kill $$rpid; echo "redis stopped: the replicas keep answering on local state"; \
	  for a in 127.0.0.1:50061 127.0.0.1:50062 127.0.0.1:50063; do \
	    $(BIN)/distillguard-bench load -addr $$a -c 8 -tokens 8 -warmup 500ms -duration 3s | grep -E 'errors|request_body' || true; \
	  done; \
	  curl -s 127.0.0.1:9091/metrics | grep -E '^distillguard_redis_(fallbacks|breaker)' || true; \
	else echo "Ctrl-C stops the demo"; wait; fi

# staticcheck, pinned; fetched through the module proxy on first use.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd deploy && $(GO) run $(STATICCHECK) ./...

e2e:
	@if ! command -v envoy >/dev/null 2>&1; then echo "e2e: envoy is not on PATH; skipping (see README, End-to-end with Envoy)"; exit 0; fi
	$(GO) test -count=1 -run 'TestE2E' -v ./envoy/

clean:
	rm -rf $(BIN) lab-out bench-out image-out
