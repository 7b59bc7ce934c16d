package server

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/transport/quictun"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
)

// scrape returns the value of each sample line of the metrics page, by
// its name and labels as written (e.g. `mirage_handshakes_total{outcome="ok"}`).
func scrape(t *testing.T, s *Server, perUser bool) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.MetricsHandler(perUser).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 {
		t.Fatalf("metrics: %d %s", rec.Code, body)
	}
	out := map[string]float64{}
	line := regexp.MustCompile(`^(mirage_[a-z_]+(?:\{[^}]*\})?) (\S+)$`)
	for _, l := range strings.Split(string(body), "\n") {
		if m := line.FindStringSubmatch(l); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			out[m[1]] = v
		}
	}
	return out
}

// After a session with traffic, a failed login and a prober, the metrics
// show the session, its connection, non-zero traffic, each handshake
// outcome where it belongs, the address pool in use and (per_user) the
// user's bytes.
func TestMetrics(t *testing.T) {
	r := newRig(t, nil)
	c := r.connect(t, "alice", "alice-pw", 1)
	for i := range 5 {
		up := tundevtest.UDP(c.v4, internet4, []byte{byte(i), 'u'})
		c.tun.Inbound <- up
		expect(t, r.tun.Outbound, up)
		down := tundevtest.UDP(internet4, c.v4, []byte{byte(i), 'd'})
		r.tun.Inbound <- down
		expect(t, c.tun.Outbound, down)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "wrong",
	})
	if !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("wrong password: %v", err)
	}
	prober, err := testDialer{r.addr}.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prober.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	io.ReadFull(prober, make([]byte, 9)) // the site answered
	prober.Close()

	if _, ok := scrape(t, r.srv, false)["mirage_quic_pacing_timeouts_total"]; ok {
		t.Error("QUIC pacing metric without QUIC")
	}
	g := quictun.NewGate() // as ServeQUIC sets it
	g.Timeouts.Add(2)
	r.srv.quicGate.Store(g)
	m := scrape(t, r.srv, true)
	for name, want := range map[string]float64{
		`mirage_quic_pacing_timeouts_total`:                  2,
		`mirage_sessions`:                                    1,
		`mirage_connections{transport="tcp-tls"}`:            1,
		`mirage_connections{transport="quic"}`:               0,
		`mirage_handshakes_total{outcome="ok"}`:              1,
		`mirage_handshakes_total{outcome="bad_credentials"}`: 1,
		`mirage_handshakes_total{outcome="camouflage"}`:      1,
		`mirage_handshakes_total{outcome="replay"}`:          0,
		`mirage_address_pool_used{family="ipv4"}`:            1,
		`mirage_address_pool_used{family="ipv6"}`:            1,
		`mirage_address_pool_size{family="ipv4"}`:            253,
		`mirage_received_packets_total`:                      5,
		`mirage_user_sessions{user="alice"}`:                 1,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{`mirage_received_bytes_total`, `mirage_sent_bytes_total`,
		`mirage_user_received_bytes_total{user="alice"}`, `mirage_user_sent_bytes_total{user="alice"}`} {
		if m[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, m[name])
		}
	}
	if _, ok := m[`mirage_user_sessions{user="alice"}`]; !ok {
		t.Error("per-user metrics missing")
	}
	if _, ok := scrape(t, r.srv, false)[`mirage_user_sessions{user="alice"}`]; ok {
		t.Error("per-user metrics without per_user")
	}

	// The user's bytes survive the session's end.
	rx := m[`mirage_user_received_bytes_total{user="alice"}`]
	c.sess.Close()
	deadline := time.Now().Add(5 * time.Second)
	for r.srv.SessionCount() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	after := scrape(t, r.srv, true)
	if after[`mirage_sessions`] != 0 || after[`mirage_user_received_bytes_total{user="alice"}`] != rx {
		t.Errorf("after the session ended: sessions %v, alice's bytes %v (were %v)",
			after[`mirage_sessions`], after[`mirage_user_received_bytes_total{user="alice"}`], rx)
	}
}

// Every metric the sample Grafana dashboard queries exists.
func TestGrafanaDashboardMetrics(t *testing.T) {
	b, err := os.ReadFile("../packaging/grafana/mirage-server.json")
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, nil)
	r.connect(t, "alice", "alice-pw", 1)
	have := map[string]bool{}
	for k := range scrape(t, r.srv, true) {
		name, _, _ := strings.Cut(k, "{")
		have[name] = true
	}
	// The NAT's metrics come from the command that sets the NAT up (the
	// e2e metrics test scrapes them from the real server).
	nat, err := os.ReadFile("cmd/mirage-server/natmetrics.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`NewDesc\("(mirage_[a-z_]+)"`).FindAllStringSubmatch(string(nat), -1) {
		have[m[1]] = true
	}
	used := regexp.MustCompile(`mirage_[a-z_]+`).FindAllString(string(b), -1)
	if len(used) < 5 {
		t.Fatalf("dashboard queries only %v", used)
	}
	for _, name := range used {
		if !have[name] {
			t.Errorf("the dashboard queries %s, which the server does not export", name)
		}
	}
}
