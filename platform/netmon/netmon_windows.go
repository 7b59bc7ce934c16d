package netmon

import (
	"errors"
	"fmt"
	"sync"

	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// winSource forwards IP Helper route and unicast address notifications
// (NotifyRouteChange2, NotifyUnicastIpAddressChange).
type winSource struct {
	events chan struct{}
	mu     sync.Mutex
	closed bool
	route  *winipcfg.RouteChangeCallback
	addr   *winipcfg.UnicastAddressChangeCallback
}

func newSource() (source, error) {
	s := &winSource{events: make(chan struct{}, 1)}
	var err error
	s.route, err = winipcfg.RegisterRouteChangeCallback(func(winipcfg.MibNotificationType, *winipcfg.MibIPforwardRow2) {
		s.signal()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	s.addr, err = winipcfg.RegisterUnicastAddressChangeCallback(func(winipcfg.MibNotificationType, *winipcfg.MibUnicastIPAddressRow) {
		s.signal()
	})
	if err != nil {
		s.route.Unregister()
		return nil, fmt.Errorf("subscribe to address changes: %w", err)
	}
	return s, nil
}

// signal runs on an IP Helper thread; it never blocks.
func (s *winSource) signal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.events <- struct{}{}:
	default:
	}
}

func (s *winSource) Events() <-chan struct{} { return s.events }

// Close unregisters both callbacks (which waits for running ones) and
// closes the channel.
func (s *winSource) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := errors.Join(s.route.Unregister(), s.addr.Unregister())
	s.mu.Lock()
	close(s.events)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("unregister network change callbacks: %w", err)
	}
	return nil
}
