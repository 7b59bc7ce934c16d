# Mirage — build, test and demo targets. Every target that needs system
# packages installs the missing ones itself (Debian/Ubuntu, as root).

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS_B := -trimpath -ldflags "$(LDFLAGS)"
export CGO_ENABLED ?= 0
export PATH := $(PATH):/usr/local/go/bin

# Debian packages the tests and the demo use.
TEST_PKGS := iproute2 nftables iptables iperf3 iputils-ping ethtool curl openssl ca-certificates procps

FUZZTIME ?= 30s

.PHONY: all build test demo vet cross fuzz deps clean fmt-check

all: build

build:
	$(GO) build $(GOFLAGS_B) -o $(BIN)/ ./server/cmd/mirage-server ./platform/cmd/mirage-helper

## deps: install the Debian packages the tests need (root only; no-op when present).
deps:
	@sh packaging/scripts/apt-ensure.sh $(TEST_PKGS)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## cross: the server, the helper and every non-GUI package build for the other OSes.
cross:
	@set -e; for t in windows/amd64 windows/arm64 darwin/amd64 darwin/arm64 freebsd/amd64 freebsd/arm64; do \
		echo "cross $$t"; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build -o /dev/null ./core/... ./server/... ./platform/cmd/... ./platform/tun/... ./platform/osnet/... ./platform/nat/...; \
	done

## test: prerequisites, formatting, vet, cross-builds, then every test (root tests run as root; under CI=true they must run).
test: deps fmt-check vet cross
	$(GO) test -count=1 -timeout 30m ./...

## fuzz: each fuzz target for $(FUZZTIME).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## demo: server + client in network namespaces, traffic through the tunnel (root).
demo:
	@bash packaging/demo/demo.sh

clean:
	rm -rf $(BIN) dist
