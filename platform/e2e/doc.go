// Package e2e holds the end-to-end tests of Mirage: the real mirage-server
// and mirage-helper binaries with real TUN devices, routes and NAT, inside
// network namespaces built per test (cli <-> rtr <-> srv <-> host).
//
// The tests need root, /dev/net/tun, ip(8), nft(8) and ping(8). Without them
// they skip, except under CI=true, where a missing requirement is a failure.
// Set MIRAGE_BIN_DIR to test prebuilt binaries instead of building them.
package e2e
