package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Super-packet access to a vnet_hdr TUN (tundev.SuperDevice): the device's
// file is read and written directly, each packet behind a virtio_net_hdr,
// bypassing wireguard/tun's split (on read) and coalescing (on write). The
// header is in the host's byte order (a legacy virtio header; the device
// is not switched to little or big endian).

var _ tundev.SuperDevice = (*Device)(nil)

const vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

// superOff is set by MIRAGE_TUN_SUPER=0: no device is a SuperDevice, so
// both ends go back to wireguard/tun's split and coalescing (for
// comparisons, like MIRAGE_TUN_QUEUES).
var superOff = os.Getenv("MIRAGE_TUN_SUPER") == "0"

// native returns the wrapped wireguard device when it has offloads on.
func (d *Device) native() *wgtun.NativeTun {
	if superOff {
		return nil
	}
	nt, ok := d.Device.(*wgtun.NativeTun)
	if !ok || nt.BatchSize() < 2 { // BatchSize 1: the kernel refused offloads
		return nil
	}
	return nt
}

// CanSuper reports whether the device reads and writes super-packets.
func (d *Device) CanSuper() bool { return d.native() != nil }

// ReadSuper reads one packet, not split, with its offload header.
func (d *Device) ReadSuper(buf []byte, offset int) (int, gso.Options, error) {
	nt := d.native()
	if nt == nil || offset < tundev.VnetHdrLen {
		return 0, gso.Options{}, errors.New("tun: no super-packet reads on this device")
	}
	n, err := nt.File().Read(buf[offset-tundev.VnetHdrLen:])
	if err != nil {
		if errors.Is(err, syscall.EBADFD) {
			err = os.ErrClosed
		}
		return 0, gso.Options{}, err
	}
	if n < tundev.VnetHdrLen {
		return 0, gso.Options{}, fmt.Errorf("tun: read %d bytes, shorter than the offload header", n)
	}
	h := buf[offset-tundev.VnetHdrLen : offset]
	o := gso.Options{
		NeedsCsum:  h[0]&vnetNeedsCsum != 0,
		Type:       h[1],
		Size:       binary.NativeEndian.Uint16(h[4:]),
		CsumStart:  binary.NativeEndian.Uint16(h[6:]),
		CsumOffset: binary.NativeEndian.Uint16(h[8:]),
	}
	return n - tundev.VnetHdrLen, o, nil
}

// WriteSuper writes packet buf[offset:] with offload header o.
func (d *Device) WriteSuper(buf []byte, offset int, o gso.Options, hdrLen int) error {
	nt := d.native()
	if nt == nil || offset < tundev.VnetHdrLen {
		return errors.New("tun: no super-packet writes on this device")
	}
	h := buf[offset-tundev.VnetHdrLen : offset]
	h[0] = 0
	if o.NeedsCsum {
		h[0] = vnetNeedsCsum
	}
	h[1] = o.Type
	binary.NativeEndian.PutUint16(h[2:], uint16(hdrLen))
	binary.NativeEndian.PutUint16(h[4:], o.Size)
	binary.NativeEndian.PutUint16(h[6:], o.CsumStart)
	binary.NativeEndian.PutUint16(h[8:], o.CsumOffset)
	_, err := nt.File().Write(buf[offset-tundev.VnetHdrLen:])
	if errors.Is(err, syscall.EBADFD) {
		err = os.ErrClosed
	}
	return err
}

// SuperPackets says this OS's TUN devices can take super-packets whole
// (when the kernel accepts the offloads, which Linux has since 2.6).
const SuperPackets = true
