package tun

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/platform/internal/nstest"
)

// TestMultiQueueTUNNetns runs TestChildMultiQueueTUN in a fresh namespace.
func TestMultiQueueTUNNetns(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	out := nstest.RunChild(t, ns, "TestChildMultiQueueTUN")
	t.Log(out)
	if !strings.Contains(out, "--- PASS: TestChildMultiQueueTUN") {
		t.Fatalf("child did not pass:\n%s", out)
	}
}

// TestChildMultiQueueTUN creates a 4-queue TUN, sends 64 UDP flows into it
// and reads every queue: all packets arrive, spread over more than one
// queue (so a pump reading only the first would lose flows), with each
// flow on one queue; a packet written to any queue reaches a local socket.
func TestChildMultiQueueTUN(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as the child of TestMultiQueueTUNNetns")
	}
	dev, err := CreateMultiQueueTUN("mqtun0", 1400, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	qs := tundev.Queues(dev)
	if len(qs) != 4 {
		t.Fatalf("Queues = %d, want 4", len(qs))
	}
	for i, q := range qs {
		if name, _ := q.Name(); name != "mqtun0" {
			t.Errorf("queue %d name %q", i, name)
		}
		if b := q.BatchSize(); b != 128 {
			t.Errorf("queue %d BatchSize = %d, want 128 (offloads)", i, b)
		}
	}
	runIP(t, "addr", "add", "192.0.2.1/24", "dev", "mqtun0")
	runIP(t, "link", "set", "mqtun0", "up")

	// flows[port] = queue it was read from (-1: seen on two queues).
	var mu sync.Mutex
	flows := map[uint16]int{}
	perQueue := make([]int, len(qs))
	total := 0
	var wg sync.WaitGroup
	for qi, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs := [][]byte{make([]byte, tundev.Offset+tundev.MaxPacket)}
			sizes := []int{0}
			for {
				n, err := q.Read(bufs, sizes, tundev.Offset)
				if n > 0 {
					p := bufs[0][tundev.Offset : tundev.Offset+sizes[0]]
					if p[0]>>4 == 4 && p[9] == 17 && strings.HasPrefix(string(p[28:]), "flow") {
						port := uint16(p[20])<<8 | uint16(p[21])
						mu.Lock()
						if prev, ok := flows[port]; ok && prev != qi {
							flows[port] = -1
						} else {
							flows[port] = qi
						}
						perQueue[qi]++
						total++
						mu.Unlock()
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}

	const nflows, per = 64, 4
	for f := 0; f < nflows; f++ {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 20000 + f}, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < per; i++ {
			if _, err := c.Write([]byte(fmt.Sprintf("flow %d %d", f, i))); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := total
		mu.Unlock()
		if n >= nflows*per {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if total != nflows*per {
		t.Errorf("read %d packets over all queues, want %d (per queue %v)", total, nflows*per, perQueue)
	}
	used := 0
	for _, n := range perQueue {
		if n > 0 {
			used++
		}
	}
	if used < 2 {
		t.Errorf("packets per queue %v: the kernel used one queue only", perQueue)
	}
	for port, q := range flows {
		if q < 0 {
			t.Errorf("flow from port %d was read from two queues", port)
		}
	}
	t.Logf("packets per queue: %v", perQueue)
	mu.Unlock()

	// The kernel steers a flow's packets to the queue that last wrote one
	// of its packets (engine.NewFlowWriter relies on it): a packet written
	// through queue i gets its reply read from queue i.
	for i := range qs {
		l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 6000 + i})
		if err != nil {
			t.Fatal(err)
		}
		pkt := udp4(net.IPv4(192, 0, 2, 2), net.IPv4(192, 0, 2, 1), uint16(7000+i), uint16(6000+i), []byte("ask"))
		buf := make([]byte, tundev.Offset+len(pkt), tundev.Offset+tundev.MaxPacket)
		copy(buf[tundev.Offset:], pkt)
		if _, err := qs[i].Write([][]byte{buf}, tundev.Offset); err != nil {
			t.Fatalf("write queue %d: %v", i, err)
		}
		l.SetReadDeadline(time.Now().Add(3 * time.Second))
		got := make([]byte, 100)
		_, from, err := l.ReadFromUDP(got)
		if err != nil {
			t.Fatalf("queue %d: socket read: %v", i, err)
		}
		if _, err := l.WriteToUDP([]byte("flow reply"), from); err != nil {
			t.Fatal(err)
		}
		l.Close()
		port := uint16(6000 + i)
		deadline := time.Now().Add(3 * time.Second)
		for {
			mu.Lock()
			q, ok := flows[port]
			mu.Unlock()
			if ok {
				if q != i {
					t.Errorf("reply of a flow written through queue %d was read from queue %d", i, q)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reply of the flow written through queue %d not read", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Inbound through the last queue.
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5555})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pkt := udp4(net.IPv4(192, 0, 2, 2), net.IPv4(192, 0, 2, 1), 4444, 5555, []byte("via queue 3"))
	buf := make([]byte, tundev.Offset+len(pkt), tundev.Offset+tundev.MaxPacket)
	copy(buf[tundev.Offset:], pkt)
	if _, err := qs[3].Write([][]byte{buf}, tundev.Offset); err != nil {
		t.Fatalf("write queue 3: %v", err)
	}
	l.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, 100)
	n, _, err := l.ReadFromUDP(got)
	if err != nil || string(got[:n]) != "via queue 3" {
		t.Fatalf("socket got %q, err %v", got[:n], err)
	}

	if err := dev.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("queue readers did not return after Close")
	}
	if _, err := net.InterfaceByName("mqtun0"); err == nil {
		t.Error("mqtun0 still exists after Close")
	}
}
