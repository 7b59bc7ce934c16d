// Package netmon tells the client when the machine's path to the internet
// changed (a Wi-Fi switch, a cable plugged in, a new DHCP gateway), so it
// can re-apply its server bypass and excluded routes through the new
// gateway and reconnect over the new interface.
//
// Each OS contributes an event source (netlink on Linux, the routing
// socket on macOS and FreeBSD, NotifyRouteChange2 on Windows) that fires on
// any route, address or link change. Events are debounced, then the
// default path (gateway and local address, via github.com/jackpal/gateway)
// is read; only a change of that path is reported, so mirage's own route
// changes (its /1 halves and host routes leave the default route alone)
// never trigger a loop. A slow poll covers an OS whose source failed.
package netmon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackpal/gateway"
)

// Timing defaults.
const (
	debounce = 500 * time.Millisecond
	poll     = 30 * time.Second
)

// source delivers a value after OS network changes; Close stops it and
// closes the channel.
type source interface {
	Events() <-chan struct{}
	Close() error
}

// Monitor reports changes of the default path.
type Monitor struct {
	changes chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	src     source
}

// New starts a monitor. When the OS event source cannot be opened, the
// monitor falls back to polling and logs why.
func New(log *slog.Logger) *Monitor {
	src, err := newSource()
	if err != nil {
		log.Warn("network change events unavailable; polling the default route", "every", poll, "err", err)
		src = nil
	}
	return start(log, src, probe, debounce, poll)
}

// start runs the monitor loop with the given seams.
func start(log *slog.Logger, src source, probe func() (string, error), debounce, poll time.Duration) *Monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Monitor{changes: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), src: src}
	var events <-chan struct{}
	if src != nil {
		events = src.Events()
	}
	last, err := probe()
	if err != nil {
		log.Debug("no default route yet", "err", err)
	}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(poll)
		defer tick.Stop()
		var settle <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-events:
				if !ok {
					events = nil
					continue
				}
				if settle == nil {
					settle = time.After(debounce)
				}
				continue
			case <-settle:
				settle = nil
			case <-tick.C:
			}
			cur, err := probe()
			if err != nil {
				cur = ""
			}
			if cur == last {
				continue
			}
			log.Info("default network path changed", "from", last, "to", cur)
			last = cur
			select {
			case m.changes <- struct{}{}:
			default: // one pending notification is enough
			}
		}
	}()
	return m
}

// Changes receives a value after each change of the default path;
// changes that happen before the last one was received are coalesced.
func (m *Monitor) Changes() <-chan struct{} { return m.changes }

// Close stops the monitor.
func (m *Monitor) Close() error {
	m.cancel()
	var err error
	if m.src != nil {
		err = m.src.Close()
	}
	<-m.done
	return err
}

// probe describes the current default path: gateway and local address.
func probe() (string, error) {
	gw, err := gateway.DiscoverGateway()
	if err != nil {
		return "", fmt.Errorf("default gateway: %w", err)
	}
	local, err := gateway.DiscoverInterface()
	if err != nil {
		return "", fmt.Errorf("default interface: %w", err)
	}
	return "gateway " + gw.String() + " via " + local.String(), nil
}
