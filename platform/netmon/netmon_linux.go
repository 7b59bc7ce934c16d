package netmon

import (
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
)

// nlSource forwards netlink route, address and link updates.
type nlSource struct {
	events chan struct{}
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newSource() (source, error) {
	s := &nlSource{events: make(chan struct{}, 1), done: make(chan struct{})}
	routes := make(chan netlink.RouteUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.RouteSubscribe(routes, s.done); err != nil {
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	if err := netlink.AddrSubscribe(addrs, s.done); err != nil {
		close(s.done)
		return nil, fmt.Errorf("subscribe to address changes: %w", err)
	}
	if err := netlink.LinkSubscribe(links, s.done); err != nil {
		close(s.done)
		return nil, fmt.Errorf("subscribe to link changes: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.events)
		for routes != nil || addrs != nil || links != nil {
			select {
			case _, ok := <-routes:
				if !ok {
					routes = nil
				}
			case _, ok := <-addrs:
				if !ok {
					addrs = nil
				}
			case _, ok := <-links:
				if !ok {
					links = nil
				}
			case <-s.done:
				return
			}
			select {
			case s.events <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

func (s *nlSource) Events() <-chan struct{} { return s.events }

func (s *nlSource) Close() error {
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
	return nil
}
