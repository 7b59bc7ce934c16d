#!/bin/sh
# make package: .deb and .rpm packages in dist/packages.
#   mirage-server  linux amd64 and arm64 (pure Go)
#   mirage         linux amd64 and arm64: the tray app (cgo, built by `make gui`
#                  and `make gui-arm64`, the latter cross-built against
#                  Debian's arm64 libraries) and the helper
set -eu
cd "$(dirname "$0")/../.."
# nfpm expands variables only in some fields: fill the templates first.
pkg() { # pkg TEMPLATE FORMAT ARCH BUILD
	sed -e "s|\${VERSION}|$VERSION|g" -e "s|\${ARCH}|$3|g" -e "s|\${BUILD}|$4|g" "$1" >dist/build/nfpm.yaml
	"$NFPM" package -f dist/build/nfpm.yaml -p "$2" -t "$out/" >/dev/null
}
NFPM=${NFPM:-.tools/nfpm}
GO=${GO:-go}
# Package versions must start with a digit: a v1.2.3 tag gives 1.2.3,
# otherwise 0.0.0~git<commit>.
tag=$(git describe --tags --exact-match 2>/dev/null || true)
case "$tag" in
v[0-9]*) VERSION=${tag#v} ;;
*) VERSION="0.0.0~git$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" ;;
esac
LDFLAGS=${LDFLAGS:-"-s -w -X main.version=$VERSION -X main.commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"}
out=dist/packages
rm -rf "$out" dist/build
mkdir -p "$out"
for arch in amd64 arm64; do
	build=dist/build/linux-$arch
	mkdir -p "$build"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -ldflags "$LDFLAGS" -o "$build/" ./server/cmd/mirage-server ./platform/cmd/mirage-helper
	for fmt in deb rpm; do
		pkg packaging/nfpm/mirage-server.yaml $fmt $arch "$build"
	done
done
for arch in amd64 arm64; do
	build=dist/build/linux-$arch
	gui=bin/mirage
	[ $arch = amd64 ] || gui=bin/mirage-linux-$arch
	cp "$gui" "$build/mirage"
	for fmt in deb rpm; do
		pkg packaging/nfpm/mirage.yaml $fmt $arch "$build"
	done
done
ls -l "$out"
