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

// Multi is a device with several queues (Linux IFF_MULTI_QUEUE). Each queue
// is a Device read and written on its own, so one goroutine per queue pumps
// in parallel; the device itself (Read, Write) is its first queue. The kernel
// hands all packets of a flow to one queue, so a flow's order is kept within
// that queue's reader. Every queue must be read: what the kernel puts in a
// queue nobody reads is lost.
type Multi interface {
	Device
	Queues() []Device
}

// Queues returns d's queues: all of them if d is a Multi, else d alone.
func Queues(d Device) []Device {
	if m, ok := d.(Multi); ok {
		if q := m.Queues(); len(q) > 0 {
			return q
		}
	}
	return []Device{d}
}
