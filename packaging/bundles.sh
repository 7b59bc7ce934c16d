#!/bin/sh
# make bundles: what can be built here for macOS and FreeBSD.
#   dist/macos/Mirage.app      the bundle layout: Info.plist (mirage:// URL
#                              scheme), icon, the helper (darwin, no cgo) and
#                              its launchd plist; the tray app itself is
#                              cgo and needs a Mac: `make macos-app` there.
#   dist/macos/mirage-server   darwin amd64 + arm64 servers
#   dist/freebsd/<arch>/       mirage-server, mirage-helper and rc.d scripts
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
VERSION=${VERSION:-dev}
LDFLAGS=${LDFLAGS:-"-s -w -X main.version=$VERSION"}
rm -rf dist/macos dist/freebsd
app=dist/macos/Mirage.app/Contents
mkdir -p "$app/MacOS" "$app/Resources" "$app/Library/LaunchDaemons"
sed "s|<string>VERSION</string>|<string>$VERSION</string>|" packaging/macos/Info.plist >"$app/Info.plist"
cp assets/icons/app.png "$app/Resources/mirage.png"
cp packaging/macos/net.mirage-vpn.helper.plist "$app/Library/LaunchDaemons/"
for arch in amd64 arm64; do
	CGO_ENABLED=0 GOOS=darwin GOARCH=$arch $GO build -trimpath -ldflags "$LDFLAGS" -o "dist/macos/$arch/" ./platform/cmd/mirage-helper ./server/cmd/mirage-server
	CGO_ENABLED=0 GOOS=freebsd GOARCH=$arch $GO build -trimpath -ldflags "$LDFLAGS" -o "dist/freebsd/$arch/" ./platform/cmd/mirage-helper ./server/cmd/mirage-server
	mkdir -p "dist/freebsd/$arch/rc.d"
	cp packaging/freebsd/rc.d/* "dist/freebsd/$arch/rc.d/"
done
# One helper in the bundle: the Mac's own architecture is chosen by the
# installer; lipo (Mac only) would make a universal one.
cp dist/macos/arm64/mirage-helper "$app/MacOS/mirage-helper"
find dist/macos dist/freebsd -type f | sort
