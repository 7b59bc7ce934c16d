package check

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// tunDevice opens /dev/net/tun as the server does (it needs CAP_NET_ADMIN
// only for TUNSETIFF, not for the open).
func (c *checker) tunDevice() {
	const name = "tun device"
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
		c.r.add("host", name, Pass, "/dev/net/tun opens", "")
	case errors.Is(err, os.ErrNotExist):
		c.r.add("host", name, Fail, "/dev/net/tun does not exist",
			"load the tun module (`modprobe tun`); in a container, pass --device /dev/net/tun")
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		c.r.add("host", name, Warn, fmt.Sprintf("/dev/net/tun: %v (check runs without the server's privileges)", err),
			"run check as root, or as the server's user with CAP_NET_ADMIN")
	default:
		c.r.add("host", name, Fail, fmt.Sprintf("/dev/net/tun: %v", err), "")
	}
}

// forwarding reads the kernel's forwarding switches. The server turns
// them on at start; off while it runs means something (a read-only
// /proc/sys in a container, a sysctl reload) turned them off again.
func (c *checker) forwarding() {
	const name = "ip forwarding"
	keys := []string{"net/ipv4/ip_forward"}
	if _, ok := c.cfg.TunnelPrefixV6(); ok {
		keys = append(keys, "net/ipv6/conf/all/forwarding")
	}
	var off []string
	for _, k := range keys {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			c.r.add("host", name, Warn, fmt.Sprintf("cannot read %s: %v", k, err), "")
			return
		}
		if strings.TrimSpace(string(b)) != "1" {
			off = append(off, strings.ReplaceAll(k, "/", "."))
		}
	}
	switch {
	case len(off) == 0:
		c.r.add("host", name, Pass, strings.ReplaceAll(strings.Join(keys, ", "), "/", ".")+" on", "")
	case c.running:
		c.r.add("host", name, Fail, strings.Join(off, ", ")+" off while the server runs: clients reach nothing beyond the server",
			"sysctl -w "+strings.Join(off, "=1 ")+"=1 (in a container: --sysctl at start)")
	default:
		c.r.add("host", name, Pass, strings.Join(off, ", ")+" off now; the server turns it on at start", "")
	}
}
