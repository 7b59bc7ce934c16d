# Mirage — build, test and demo targets. Every target that needs system
# packages installs the missing ones itself (Debian/Ubuntu, as root).

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOFLAGS_B := -trimpath -ldflags "$(LDFLAGS)"
export CGO_ENABLED ?= 0
export PATH := $(PATH):/usr/local/go/bin

# Debian packages the tests and the demo use.
TEST_PKGS := iproute2 nftables iptables iperf3 iputils-ping ethtool curl openssl ca-certificates procps debootstrap qemu-user

# Debian packages the Fyne desktop app (cgo: GLFW, OpenGL, X11 + Wayland) builds with.
GUI_DEBS := gcc libc6-dev pkg-config libgl1-mesa-dev libx11-dev libxcursor-dev libxrandr-dev \
	libxinerama-dev libxi-dev libxxf86vm-dev libwayland-dev libxkbcommon-dev
# The same for cross-building the arm64 tray app (Debian multiarch).
GUI_ARM64_DEBS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross $(addsuffix :arm64,libgl1-mesa-dev libx11-dev libxcursor-dev \
	libxrandr-dev libxinerama-dev libxi-dev libxxf86vm-dev libwayland-dev libxkbcommon-dev)
# The one package that needs cgo; everything else builds and tests with CGO_ENABLED=0.
GUI_PKG  := ./gui/cmd/mirage
NOCGO_PKGS = $$($(GO) list -e ./... | grep -v '/gui/cmd/mirage$$')

FUZZTIME ?= 30s

.PHONY: all build gui gui-arm64 gui-windows screenshot bench bench-wan test demo vet cross fuzz deps clean fmt-check

all: build

build:
	$(GO) build $(GOFLAGS_B) -o $(BIN)/ ./server/cmd/mirage-server ./platform/cmd/mirage-helper

## deps: install the Debian packages the tests need (root only; no-op when present).
deps:
	@sh packaging/scripts/apt-ensure.sh $(TEST_PKGS) $(GUI_DEBS)

## gui: the tray app bin/mirage (Fyne, needs cgo and the GUI_DEBS).
gui:
	@sh packaging/scripts/apt-ensure.sh $(GUI_DEBS)
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_B) -o $(BIN)/mirage $(GUI_PKG)

## gui-arm64: bin/mirage-linux-arm64, the tray app cross-built for arm64 Linux (cgo with Debian's arm64 libraries; part of `package`).
gui-arm64:
	@sh packaging/scripts/apt-ensure.sh $(GUI_ARM64_DEBS)
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
		PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
		$(GO) build $(GOFLAGS_B) -o $(BIN)/mirage-linux-arm64 $(GUI_PKG)

## gui-windows: bin/mirage.exe cross-built with mingw-w64 (cold: about 6 min on 2 cores; not part of `test`).
gui-windows:
	@sh packaging/scripts/apt-ensure.sh gcc-mingw-w64-x86-64
	CGO_ENABLED=1 GOOS=windows GOARCH=amd64 CC=x86_64-w64-mingw32-gcc \
		$(GO) build -trimpath -ldflags "$(LDFLAGS) -H windowsgui" -o $(BIN)/mirage.exe $(GUI_PKG)

## windows-installer: dist/Mirage-setup.exe (NSIS): the tray app, the helper installed as a service, Start-menu entry, mirage:// handler.
windows-installer: gui-windows
	@sh packaging/scripts/apt-ensure.sh nsis
	mkdir -p dist/build/windows-amd64
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build $(GOFLAGS_B) -o dist/build/windows-amd64/mirage-helper.exe ./platform/cmd/mirage-helper
	cp $(BIN)/mirage.exe dist/build/windows-amd64/mirage.exe
	makensis -V2 -DVERSION=$(VERSION) -DBUILD=$(CURDIR)/dist/build/windows-amd64 -DOUT=$(CURDIR)/dist/Mirage-setup.exe packaging/windows/mirage.nsi
	@ls -l dist/Mirage-setup.exe

## screenshot: the tray app under Xvfb, connected through a server in network namespaces; PNGs in dist/screenshots (root).
screenshot: build gui
	@bash gui/screenshot.sh dist/screenshots

vet:
	$(GO) vet $(NOCGO_PKGS)
	CGO_ENABLED=1 $(GO) vet -trimpath $(GUI_PKG)  # -trimpath: share the cgo build cache with `gui`

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## cross: the server, the helper and every non-GUI package build and vet for the other OSes (the GUI: gui, gui-windows).
cross:
	@set -e; for t in windows/amd64 windows/arm64 darwin/amd64 darwin/arm64 freebsd/amd64 freebsd/arm64; do \
		echo "cross $$t"; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build -o /dev/null ./core/... ./server/... ./platform/...; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./core/... ./server/... ./platform/...; \
	done

## test: prerequisites, formatting, vet, cross-builds, then every test (root tests run as root; under CI=true they must run).
test: deps fmt-check vet cross gui
	cd packaging/image && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(GO) test -count=1 -timeout 30m $(NOCGO_PKGS)
	@# Every fuzz target briefly (a count, not a time: a short -fuzztime can
	@# end during the seed-corpus baseline and report a deadline as failure).
	@$(MAKE) -s fuzz FUZZTIME=5000x

## fuzz: each fuzz target for $(FUZZTIME) (a duration, or N executions as Nx).
fuzz:
	@set -e; for pkg in $$(CGO_ENABLED=0 $(GO) list -e ./... 2>/dev/null | grep -v '/gui/cmd/mirage$$'); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## package: .deb and .rpm of mirage-server and mirage (tray app + helper), amd64 and arm64, in dist/packages (nfpm $(NFPM_VERSION)).
NFPM_VERSION := v2.45.0
package: gui gui-arm64
	@GOBIN=$(CURDIR)/.tools $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	@GO=$(GO) sh packaging/nfpm/package.sh

## bundles: the macOS .app layout (helper + launchd plist; the cgo tray app needs a Mac: macos-app) and FreeBSD binaries + rc.d scripts in dist/.
bundles:
	@GO=$(GO) VERSION=$(VERSION) LDFLAGS="$(LDFLAGS)" sh packaging/bundles.sh

## macos-app: on a Mac: the tray app into the bundle (cgo; then sign and notarize with your Developer ID).
macos-app: bundles
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_B) -o dist/macos/Mirage.app/Contents/MacOS/mirage $(GUI_PKG)
	@echo "sign: codesign --deep --options runtime -s 'Developer ID Application: ...' dist/macos/Mirage.app"
	@echo "notarize: xcrun notarytool submit ... --wait && xcrun stapler staple dist/macos/Mirage.app"

## image: the mirage-server container image as a docker-archive tarball, dist/mirage-server-image.tar (no Docker engine needed).
image:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_B) -o dist/build/linux-amd64/mirage-server ./server/cmd/mirage-server
	cd packaging/image && $(GO) run . -binary ../../dist/build/linux-amd64/mirage-server \
		-tag mirage-server:$(VERSION) -out ../../dist/mirage-server-image.tar
	@ls -l dist/mirage-server-image.tar

## bench: netns + iperf3 benchmark of raw veth, wireguard-go and Mirage's transports on the LAN, then on emulated WAN links (root; BENCH_REPS, BENCH_TIME, BENCH_WAN_*).
bench: build
	@bash packaging/bench/bench.sh
	@bash packaging/bench/wan.sh

## bench-wan: only the WAN part: a user-space link emulator (RTT, loss, bottleneck) between client and server (root; BENCH_WAN_REPS, BENCH_WAN_TIME, BENCH_WAN_SCENARIOS, BENCH_WAN_ROWS).
bench-wan: build
	@bash packaging/bench/wan.sh

## demo: server + client in network namespaces, traffic through the tunnel (root).
demo:
	@bash packaging/demo/demo.sh

clean:
	rm -rf $(BIN) dist
