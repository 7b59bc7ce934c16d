package server

import (
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
)

// No log line of either side, at debug level, in text or JSON, holds a
// session secret: the password, the session id, the join key, the
// resumption ticket. A session with two connections (a join) and traffic,
// a failed login and a resumption with the ticket all run first.
func TestNoSecretsInDebugLogs(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var logs syncBuffer
			newLog := func() *slog.Logger {
				o := &slog.HandlerOptions{Level: slog.LevelDebug}
				if format == "json" {
					return slog.New(slog.NewJSONHandler(&logs, o))
				}
				return slog.New(slog.NewTextHandler(&logs, o))
			}
			r := newRigWith(t, "127.0.0.1:0", nil, func(o *Options) { o.Logger = newLog() })
			sess, tun := startSession(t, engine.SessionParams{
				Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "alice-pw", Parallel: 2, Logger: newLog(),
			}, 1420)
			v4 := sess.Welcome.ClientAddrs[0].Addr()
			up := tundevtest.UDP(v4, internet4, []byte("secret-free traffic"))
			tun.Inbound <- up
			expect(t, r.tun.Outbound, up)
			w := sess.Welcome
			if _, err := engine.DialSession(t.Context(), engine.SessionParams{
				Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "wrong-pw-123", Logger: newLog(),
			}); err == nil {
				t.Fatal("a wrong password logged in")
			}
			sess.Close()
			s2, _ := startSession(t, engine.SessionParams{
				Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Ticket: w.Ticket, Logger: newLog(),
			}, 1420)
			s2.Close()
			time.Sleep(100 * time.Millisecond) // the server logs the session's end

			text := logs.String()
			if !strings.Contains(text, "alice") || strings.Count(text, "\n") < 5 {
				t.Fatalf("the debug logs look empty; the check below would prove nothing:\n%s", text)
			}
			secrets := map[string][]byte{
				"the password":       []byte("alice-pw"),
				"the wrong password": []byte("wrong-pw-123"),
				"the session id":     w.SessionID[:],
				"the join key":       w.JoinKey[:],
				"the ticket":         w.Ticket,
			}
			for what, b := range secrets {
				if len(b) == 0 {
					t.Errorf("%s is empty: nothing to look for", what)
					continue
				}
				forms := []string{hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b)}
				if what == "the password" || what == "the wrong password" {
					forms = []string{string(b)}
				}
				for _, f := range forms {
					if strings.Contains(strings.ToLower(text), strings.ToLower(f)) {
						t.Errorf("a debug log line holds %s (%s)", what, f)
					}
				}
			}
		})
	}
}
