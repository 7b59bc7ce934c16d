package tlsx

import "net"

// NotSentLowat is the TCP_NOTSENT_LOWAT of tunnel connections: at most
// this many bytes wait unsent in the kernel before a write blocks. In
// `make bench` (tcp-tls, 2 runs each, 2026-12-02) the kernel default
// (no bound) gave 5171 / 4791 Mbit/s up / down and 1887 under 1 % loss;
// 16 KiB 5291 / 5038 and 2951; 32 KiB 5202 / 4808 and 3238; 128 KiB
// 5052 / 4644 and 2607; RTT under load was 2.4–3.2 ms in all of them. The
// gain under loss is the largest; a likely reason is that with little
// queued in the socket the inner TCP feels the outer one's loss recovery
// at once instead of after a socket buffer's worth of delay.
const NotSentLowat = 32 << 10

// TuneTCP sets the socket options of a tunnel's TCP connection: no Nagle
// delay (every write is a whole batch of packets) and the bound on unsent
// data (Linux and macOS; Windows and FreeBSD have no such option), so the
// queue a bulk transfer builds stays in front of the tunnel, where the
// inner TCP sees it, instead of in the socket.
func TuneTCP(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetNoDelay(true)
	setNotSentLowat(tc, NotSentLowat)
}
