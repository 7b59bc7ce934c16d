//go:build linux

package linkem

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OpenTUN attaches to (or creates) the TUN device name without packet
// information and without offloads, so every read is one IP packet of at
// most the device's MTU: a GSO packet the router forwards is segmented by
// the kernel before it reaches the emulator, and loss hits wire-sized
// packets.
func OpenTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr [unix.IFNAMSIZ + 64]byte
	copy(ifr[:unix.IFNAMSIZ-1], name)
	*(*uint16)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to tun %s: %w", name, e)
	}
	// Non-blocking so that the runtime poller owns it and a read deadline
	// can stop Run.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: set non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// Emulator runs both directions of a link over one TUN device. A packet
// whose destination lies in Up's prefix takes the up link, every other
// packet the down link.
type Emulator struct {
	UpPrefixes []netip.Prefix
	Up, Down   *Link
}

// packet is one IP packet waiting to leave its link.
type packet struct {
	buf  []byte
	exit time.Time
}

// pending bounds the packets one direction holds at once (in flight plus
// queued); beyond it packets are counted as queue drops. 1 Gbit/s × 200 ms
// of full-size packets is about 17,000.
const pending = 1 << 16

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// Run moves packets until ctx ends or the device fails.
func (e *Emulator) Run(ctx context.Context, dev *os.File) error {
	var wg sync.WaitGroup
	upQ, downQ := make(chan packet, pending), make(chan packet, pending)
	done := make(chan struct{})
	for _, d := range []struct {
		q chan packet
		l *Link
	}{{upQ, e.Up}, {downQ, e.Down}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release(dev, d.q, d.l, done)
		}()
	}
	stop := context.AfterFunc(ctx, func() { dev.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err := e.read(dev, upQ, downQ)
	close(done)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (e *Emulator) read(dev *os.File, upQ, downQ chan packet) error {
	scratch := make([]byte, 65536)
	for {
		n, err := dev.Read(scratch)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
			return fmt.Errorf("read tun: %w", err)
		}
		if n == 0 {
			continue
		}
		l, q := e.Down, downQ
		if e.isUp(scratch[:n]) {
			l, q = e.Up, upQ
		}
		exit, ok := l.Admit(time.Now(), n)
		if !ok {
			continue
		}
		var buf []byte
		if n <= 2048 {
			buf = (*bufPool.Get().(*[]byte))[:n]
		} else {
			buf = make([]byte, n)
		}
		copy(buf, scratch[:n])
		select {
		case q <- packet{buf: buf, exit: exit}:
		default:
			l.Stats.QueueDrops.Add(1)
			putBuf(buf)
		}
	}
}

// isUp reports whether the packet's destination is in an up prefix.
func (e *Emulator) isUp(p []byte) bool {
	var dst netip.Addr
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return false
		}
		dst = netip.AddrFrom4([4]byte(p[16:20]))
	case 6:
		if len(p) < 40 {
			return false
		}
		dst = netip.AddrFrom16([16]byte(p[24:40]))
	default:
		return false
	}
	for _, pre := range e.UpPrefixes {
		if pre.Contains(dst) {
			return true
		}
	}
	return false
}

// release writes each packet back to the device at its exit time.
func release(dev *os.File, q chan packet, l *Link, done chan struct{}) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		var p packet
		select {
		case p = <-q:
		case <-done:
			return
		}
		if d := time.Until(p.exit); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return
			}
		}
		if _, err := dev.Write(p.buf); err == nil {
			l.Delivered(len(p.buf))
		}
		putBuf(p.buf)
	}
}

func putBuf(b []byte) {
	if cap(b) == 2048 {
		b = b[:0]
		bufPool.Put(&b)
	}
}
