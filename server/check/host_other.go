//go:build !linux

package check

import "runtime"

// tunDevice is checked on Linux only; elsewhere the server reports a
// missing TUN driver when it starts.
func (c *checker) tunDevice() {
	c.r.add("host", "tun device", Skip, "not checked on "+runtime.GOOS, "")
}

func (c *checker) forwarding() {
	c.r.add("host", "ip forwarding", Skip, "not checked on "+runtime.GOOS, "")
}
