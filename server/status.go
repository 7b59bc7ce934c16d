package server

import (
	"net"
	"slices"
	"time"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// Status is a snapshot of a running server for `mirage-server status`.
type Status struct {
	Started     time.Time      `json:"started"`
	Sessions    []SessionInfo  `json:"sessions"`
	UsersOnline int            `json:"users_online"`
	Connections map[string]int `json:"connections"` // by transport
}

// SessionInfo describes one session (no secrets: no ids or keys).
type SessionInfo struct {
	User        string     `json:"user"`
	Addrs       []string   `json:"addrs"`
	Since       time.Time  `json:"since"`
	Mux         string     `json:"mux"`
	RxBytes     uint64     `json:"rx_bytes"` // from the client
	TxBytes     uint64     `json:"tx_bytes"` // to the client
	Connections []ConnInfo `json:"connections"`
}

// ConnInfo is one connection of a session.
type ConnInfo struct {
	Transport string `json:"transport"`
	Remote    string `json:"remote"`
	// Congestion is the TCP congestion control in use (absent for QUIC).
	Congestion string `json:"congestion,omitempty"`
}

// Status returns a snapshot of the sessions, sorted by user then start.
func (s *Server) Status() Status {
	st := Status{Started: s.started, Connections: map[string]int{"tcp-tls": 0, "reality": 0, "quic": 0}}
	users := map[string]bool{}
	s.mu.Lock()
	for _, ss := range s.sessions {
		info := SessionInfo{User: ss.user, Since: ss.started, Mux: muxName(ss.mux),
			RxBytes: ss.rxBytes.Load(), TxBytes: ss.txBytes.Load()}
		for _, a := range ss.addrs {
			info.Addrs = append(info.Addrs, a.String())
		}
		for _, l := range ss.linkList() {
			info.Connections = append(info.Connections, ConnInfo{Transport: l.transport, Remote: l.c.RemoteAddr().String(),
				Congestion: congestion(l.c)})
			st.Connections[l.transport]++
		}
		users[ss.user] = true
		st.Sessions = append(st.Sessions, info)
	}
	s.mu.Unlock()
	st.UsersOnline = len(users)
	slices.SortFunc(st.Sessions, func(a, b SessionInfo) int {
		if a.User != b.User {
			if a.User < b.User {
				return -1
			}
			return 1
		}
		return a.Since.Compare(b.Since)
	})
	return st
}

// congestion is the TCP congestion control of a link's connection, found
// under its TLS layers.
func congestion(c net.Conn) string {
	for range 4 {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return tlsx.Congestion(c)
}
