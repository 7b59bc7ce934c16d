//go:build darwin || freebsd

package netmon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// rtSource reads the routing socket and signals on route, address and
// interface messages.
type rtSource struct {
	f      *os.File
	events chan struct{}
	once   sync.Once
	done   chan struct{}
}

func newSource() (source, error) {
	fd, err := unix.Socket(unix.AF_ROUTE, unix.SOCK_RAW, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("open routing socket: %w", err)
	}
	unix.CloseOnExec(fd)
	// Non-blocking, so os.NewFile registers it with the runtime poller and
	// Close interrupts a pending Read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("routing socket non-blocking: %w", err)
	}
	s := &rtSource{f: os.NewFile(uintptr(fd), "route"), events: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read()
	return s, nil
}

// read forwards interesting messages until the socket is closed.
func (s *rtSource) read() {
	defer close(s.done)
	defer close(s.events)
	buf := make([]byte, 8192)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			if errors.Is(err, unix.ENOBUFS) { // overflow: something changed
				s.signal()
				continue
			}
			return
		}
		if interesting(buf[:n]) {
			s.signal()
		}
	}
}

func (s *rtSource) signal() {
	select {
	case s.events <- struct{}{}:
	default:
	}
}

// interesting reports whether a routing message (rt_msghdr, ifa_msghdr and
// if_msghdr all start with length u16, version u8, type u8) is a route,
// address or interface change.
func interesting(msg []byte) bool {
	if len(msg) < 4 || msg[2] != unix.RTM_VERSION {
		return false
	}
	switch int(msg[3]) {
	case unix.RTM_ADD, unix.RTM_DELETE, unix.RTM_CHANGE, unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_IFINFO:
		return true
	}
	return false
}

func (s *rtSource) Events() <-chan struct{} { return s.events }

// Close closes the socket, which unblocks the reader, and waits for it.
func (s *rtSource) Close() error {
	var err error
	s.once.Do(func() { err = s.f.Close() })
	<-s.done
	return err
}
