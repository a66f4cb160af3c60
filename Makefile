# distillguard: `make run` serves on the embedded default config, `make test`
# runs the whole suite. Everything else here is optional.
SHELL := /bin/bash
GO ?= go
BIN := bin
CORPUS ?= $(abspath ../shared/data)
export DISTILLGUARD_CORPUS ?= $(CORPUS)

.PHONY: all build run test test-short fuzz bench bench-micro bench-smoke lab e2e lint check-config clean \
	tools test-deploy helm-lint helm-template image

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
SEED ?= 1
SCALE ?= 1
lab:
	$(GO) run ./cmd/distillguard-lab -corpus $(CORPUS) -seed $(SEED) -scale $(SCALE) -out lab-out
	@awk '/^### Attacker cost multiple/{p=1} p{print} p&&/^Configuration /{p=0; print ""}' lab-out/lab-report.md

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...

e2e:
	@if ! command -v envoy >/dev/null 2>&1; then echo "e2e: envoy is not on PATH; skipping (see README, End-to-end with Envoy)"; exit 0; fi
	$(GO) test -count=1 -run 'TestE2E' -v ./envoy/

clean:
	rm -rf $(BIN) lab-out bench-out image-out
