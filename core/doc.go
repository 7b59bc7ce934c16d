// Package core is the OS-agnostic heart of Mirage: configuration, protocol,
// authentication, transports and the packet engine. Nothing under core/ may
// import platform/, gui/, server/ or Fyne; deps_test.go enforces that and
// that the helper and server binaries never link Fyne.
package core
