// Package tundev declares the batched TUN device the engine pumps. It has the
// shape of golang.zx2c4.com/wireguard/tun.Device (minus Events), so the
// platform's real devices satisfy it and tests can use channel fakes.
package tundev

// Offset is the headroom every buffer handed to Read/Write must have in front
// of the IP packet (virtio-net header on Linux, AF header on BSDs).
const Offset = 16

// MaxPacket is the largest IP packet carried.
const MaxPacket = 65535

// Device is a batched layer-3 device.
type Device interface {
	// Read reads up to len(bufs) packets; packet i is bufs[i][offset:offset+sizes[i]].
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes packets bufs[i][offset:]. The return value is not a packet count.
	Write(bufs [][]byte, offset int) (int, error)
	MTU() (int, error)
	Name() (string, error)
	BatchSize() int
	Close() error
}
