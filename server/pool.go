package server

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sync"
)

// Pool hands out client tunnel addresses from one prefix, skipping the
// network and broadcast addresses and the server's own.
type Pool struct {
	mu     sync.Mutex
	prefix netip.Prefix // masked
	server netip.Addr
	used   map[netip.Addr]bool
	next   netip.Addr
	size   uint64 // usable host addresses, capped
}

// maxScan bounds a search for a free address (IPv6 pools are huge).
const maxScan = 1 << 16

// NewPool makes a pool for the prefix of server (e.g. 198.51.100.1/24).
func NewPool(server netip.Prefix) *Pool {
	p := server.Masked()
	hostBits := p.Addr().BitLen() - p.Bits()
	size := uint64(maxScan)
	if hostBits < 17 {
		size = uint64(1)<<hostBits - 2
	}
	return &Pool{prefix: p, server: server.Addr(), used: map[netip.Addr]bool{}, next: p.Addr().Next(), size: size}
}

// Usage returns the addresses handed out and the pool's size: the
// addresses clients can get (host addresses less the server's), or 65536
// for pools larger than that (IPv6).
func (p *Pool) Usage() (used, size uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	size = p.size
	if size < maxScan && size > 0 {
		size-- // the server's own address
	}
	return uint64(len(p.used)), size
}

// Prefix returns the pool's network.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

func (p *Pool) usable(a netip.Addr) bool {
	if !p.prefix.Contains(a) || a == p.server || a == p.prefix.Addr() {
		return false
	}
	if a.Is4() && p.prefix.Bits() < 31 && a == lastAddr(p.prefix) {
		return false
	}
	return true
}

// ErrExhausted means every address of the pool is in use.
var ErrExhausted = errors.New("address pool exhausted")

// Allocate returns want if it is usable and free, else the next free one.
func (p *Pool) Allocate(want netip.Addr) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if want.IsValid() && p.usable(want) && !p.used[want] {
		p.used[want] = true
		return want, nil
	}
	a := p.next
	for i := uint64(0); i < p.size+2; i++ {
		if !p.prefix.Contains(a) {
			a = p.prefix.Addr().Next()
		}
		if p.usable(a) && !p.used[a] {
			p.used[a] = true
			p.next = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("%w (%s)", ErrExhausted, p.prefix)
}

// Release returns a to the pool.
func (p *Pool) Release(a netip.Addr) {
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}

// InUse reports whether a is allocated.
func (p *Pool) InUse(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used[a]
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	n := new(big.Int).SetBytes(b)
	host := p.Addr().BitLen() - p.Bits()
	mask := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(host)), big.NewInt(1))
	n.Or(n, mask)
	out := make([]byte, len(b))
	n.FillBytes(out)
	a, _ := netip.AddrFromSlice(out)
	return a
}
