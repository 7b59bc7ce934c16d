//go:build !linux && !freebsd

package tlsx

import "net"

func setCongestion(*net.TCPConn, string) error { return errNoPerSocketCC }

func getCongestion(*net.TCPConn) string { return "" }

func congestionRefusal(err error) string { return err.Error() }
