package main

import "syscall"

// reusePort is a no-op on Windows (SO_REUSEADDR there means something else).
func reusePort(network, address string, c syscall.RawConn) error { return nil }
