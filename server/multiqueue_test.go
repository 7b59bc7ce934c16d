package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

// With multi-queue TUNs at both ends, server and client read every queue
// and write each flow through one queue (engine.FlowQueue), whichever
// connection carried it; each flow keeps its order both ways, in flow and
// round_robin mode (the server's readers stage into one session, the
// client's send one batch at a time).
func TestMultiQueueTUN(t *testing.T) {
	for _, mode := range []uint8{wire.MuxFlow, wire.MuxRoundRobin} {
		t.Run(muxName(mode), func(t *testing.T) {
			const nq, nFlows, perFlow = 3, 6, 150
			m := tundevtest.NewMulti(1420, nq)
			t.Cleanup(func() { m.Close() })
			r := newRigWith(t, "127.0.0.1:0", nil, func(o *Options) { o.TUN = m })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sess, err := engine.DialSession(ctx, engine.SessionParams{
				Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "alice-pw",
				Parallel: 2, Mux: mode,
			})
			if err != nil {
				t.Fatal(err)
			}
			cm := tundevtest.NewMulti(1420, 2)
			sess.Start(cm)
			tn := engine.NewTunnel(cm, nil)
			tn.Attach(sess)
			go tn.Run()
			t.Cleanup(func() { sess.Close(); cm.Close() })
			waitLinks(t, r.srv, 2)
			waitClientLinks(t, sess, 2)
			v4 := sess.Welcome.ClientAddrs[0].Addr()

			// Down: flow f is read from queue f % nq, as the kernel keeps
			// a flow on one queue.
			f := &seqFlows{src: internet4, dst: v4}
			final := make(chan []uint32, 1)
			errc := make(chan error, 1)
			down := make(chan []byte, 4096)
			cper := merge(t, cm, down)
			go func() { errc <- collect(down, nFlows, final) }()
			sent := make([]uint32, nFlows)
			for i := 0; i < nFlows*perFlow; i++ {
				fl := i % nFlows
				m.Q[fl%nq].Inbound <- f.packet(fl, sent[fl])
				sent[fl]++
				if i%16 == 15 {
					time.Sleep(time.Millisecond)
				}
			}
			final <- sent
			if err := <-errc; err != nil {
				t.Fatalf("down: %v", err)
			}

			// Up: the server writes through the queues of its connections.
			merged := make(chan []byte, 4096)
			per := merge(t, m, merged)
			u := &seqFlows{src: v4, dst: internet4}
			go func() { errc <- collect(merged, nFlows, final) }()
			usent := make([]uint32, nFlows)
			for i := 0; i < nFlows*perFlow; i++ {
				fl := i % nFlows
				cm.Q[fl%2].Inbound <- u.packet(fl, usent[fl])
				usent[fl]++
				if i%16 == 15 {
					time.Sleep(time.Millisecond)
				}
			}
			final <- usent
			if err := <-errc; err != nil {
				t.Fatalf("up: %v", err)
			}
			if got := per(); used(got) < 2 {
				t.Errorf("server: packets written per queue %v: want flows on two queues at least", got)
			}
			if got := cper(); used(got) < 2 {
				t.Errorf("client: packets written per queue %v: want flows on two queues at least", got)
			}
			t.Logf("written per queue: server %v, client %v", per(), cper())
		})
	}
}

// merge forwards what m's queues write to out until the test ends; the
// function it returns counts the packets per queue so far.
func merge(t *testing.T, m *tundevtest.MultiTUN, out chan []byte) func() []int {
	var mu sync.Mutex
	per := make([]int, len(m.Q))
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for qi, q := range m.Q {
		go func() {
			for {
				select {
				case p := <-q.Outbound:
					if want := engine.FlowQueue(p, len(m.Q)); want != qi {
						t.Errorf("packet of a flow written to queue %d, want its flow's queue %d", qi, want)
					}
					mu.Lock()
					per[qi]++
					mu.Unlock()
					select {
					case out <- p:
					case <-stop:
						return
					}
				case <-stop:
					return
				}
			}
		}()
	}
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), per...)
	}
}

func used(per []int) int {
	n := 0
	for _, x := range per {
		if x > 0 {
			n++
		}
	}
	return n
}
