# llmscaler build. `make test` is what CI runs; it installs the tools the tests need into
# .tools/bin at pinned versions, so a fresh machine with Go is enough.

GO            ?= go
TOOLS         := $(CURDIR)/.tools/bin
BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.6.0
GRPCURL_VERSION        := v1.9.3

BUF      := $(TOOLS)/buf
GRPCURL  := $(TOOLS)/grpcurl
PROTOC_GEN_GO   := $(TOOLS)/protoc-gen-go
PROTOC_GEN_GRPC := $(TOOLS)/protoc-gen-go-grpc

MODULE   := github.com/llmscaler/llmscaler
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X $(MODULE)/internal/buildinfo.version=$(VERSION)
# go-nvml's headers warn about deprecated declarations; the warnings say nothing about us.
export CGO_CFLAGS ?= -Wno-deprecated-declarations

BINARIES := llmscaler-controller llmscaler-agent llmscaler-router llmscaler

# DEMO_FLAGS pass flags to the demo, e.g. make demo DEMO_FLAGS=--stay
DEMO_FLAGS ?=

.PHONY: all build demo test test-short check check-deps check-proto check-fmt lint proto tools clean

all: build

build:
	@mkdir -p bin
	$(foreach b,$(BINARIES),$(GO) build -ldflags "$(LDFLAGS)" -o bin/$(b) ./cmd/$(b) &&) true

# The first run: a controller, two agents with simulated GPUs, a router and fake model servers
# on this machine, autoscaling the seed workload through the router (about 3.5 minutes); the
# plot of the run goes to demo-out/.
demo:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/llmscaler ./cmd/llmscaler
	bin/llmscaler demo $(DEMO_FLAGS)

# The end-to-end tests run the real binaries and grpcurl.
test: build $(GRPCURL) check-deps
	PATH="$(TOOLS):$$PATH" LLMSCALER_BIN="$(CURDIR)/bin" $(GO) test -race -count=1 -timeout 15m ./...

# Unit tests only: no binaries, no end-to-end runs.
test-short:
	$(GO) test -race -count=1 -short ./...

# Everything CI checks besides the tests.
check: check-deps check-fmt check-proto lint

# agent/ and controller/ never import each other; internal/ imports neither.
check-deps:
	@fail=0; \
	for p in $$($(GO) list ./agent/...); do \
	  if $(GO) list -deps $$p | grep -qE '^$(MODULE)/controller(/|$$)'; then echo "check-deps: $$p imports controller/"; fail=1; fi; done; \
	for p in $$($(GO) list ./controller/...); do \
	  if $(GO) list -deps $$p | grep -qE '^$(MODULE)/agent(/|$$)'; then echo "check-deps: $$p imports agent/"; fail=1; fi; done; \
	for p in $$($(GO) list ./internal/...); do \
	  if $(GO) list -deps $$p | grep -qE '^$(MODULE)/(agent|controller)(/|$$)'; then echo "check-deps: $$p imports agent/ or controller/"; fail=1; fi; done; \
	if [ $$fail = 0 ]; then echo "check-deps: ok"; fi; exit $$fail

check-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi; echo "check-fmt: ok"

lint: $(BUF)
	$(GO) vet ./...
	$(BUF) lint

proto: $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)
	PATH="$(TOOLS):$$PATH" $(BUF) generate

# Regenerate and fail if the committed code differs from what the pinned plugins make.
check-proto: proto
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
	  echo "check-proto: generated code is out of date; run 'make proto' and commit:"; \
	  git status --porcelain -- proto; git diff --stat -- proto; exit 1; fi; echo "check-proto: ok"

tools: $(BUF) $(GRPCURL) $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)

$(BUF):
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(GRPCURL):
	GOBIN=$(TOOLS) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(PROTOC_GEN_GO):
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(PROTOC_GEN_GRPC):
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)

clean:
	rm -rf bin
