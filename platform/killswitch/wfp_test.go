package killswitch

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// The -update flag rewrites golden files. Another OS's tests in this
// package may define it too, so it is registered only once.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files")
	}
}

func wfpUpdate() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// wfpGolden compares got with testdata/wfp/<name>.golden.
func wfpGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "wfp", name+".golden")
	if wfpUpdate() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -run %s -update to create it): %v", t.Name(), err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it)\n--- got:\n%s--- want:\n%s", name, path, got, want)
	}
}

const wfpTestLUID = 0x0006_0000_0a00_0000 // IF_TYPE_PROP_VIRTUAL, NetLuidIndex 10

var wfpCases = []struct {
	name string
	cfg  Config
	lans []netip.Prefix
	luid uint64
}{
	{name: "plain", cfg: Config{TunInterface: "mirage0",
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")}}, luid: wfpTestLUID},
	{name: "allow_lan", cfg: Config{TunInterface: "mirage0", AllowLAN: true,
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")}},
		lans: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fd00:1::/64")}, luid: wfpTestLUID},
	{name: "lan_not_allowed", cfg: Config{TunInterface: "mirage0",
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")}},
		lans: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, luid: wfpTestLUID},
	{name: "v6_servers", cfg: Config{TunInterface: "mirage0", Servers: []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:443"), netip.MustParseAddrPort("[fd00::7]:443"),
		netip.MustParseAddrPort("[::ffff:203.0.113.9]:8443")}}, luid: wfpTestLUID},
	{name: "dns", cfg: Config{TunInterface: "mirage0",
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")},
		DNS:     []netip.Addr{netip.MustParseAddr("203.0.113.53"), netip.MustParseAddr("fd00::53")}}, luid: wfpTestLUID},
	{name: "dns_allow_lan", cfg: Config{TunInterface: "mirage0", AllowLAN: true,
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")},
		DNS:     []netip.Addr{netip.MustParseAddr("203.0.113.53")}},
		lans: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, luid: wfpTestLUID},
	{name: "no_tunnel_yet", cfg: Config{TunInterface: "mirage0",
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443")}}},
}

func TestWFPGolden(t *testing.T) {
	for _, c := range wfpCases {
		t.Run(c.name, func(t *testing.T) {
			fs, err := wfpFilters(c.cfg, c.lans, c.luid)
			if err != nil {
				t.Fatal(err)
			}
			wfpGolden(t, c.name, wfpRender(fs))
		})
	}
}

// wfpPacket is a flow to decide on: the fields a filter can match.
type wfpPacket struct {
	layer     wfpLayer
	remote    netip.Addr
	proto     uint64
	lport     uint64 // ICMP type for ICMPv6
	rport     uint64
	luid      uint64
	loopback  bool
	wantAllow bool
}

// wfpDecide evaluates fs as WFP does within one sublayer: the matching
// filter with the highest weight decides; nothing matching permits.
func wfpDecide(fs []wfpFilter, p wfpPacket) bool {
	best, found := wfpFilter{}, false
	for _, f := range fs {
		if f.layer != p.layer || !wfpMatches(f, p) {
			continue
		}
		if !found || f.weight > best.weight {
			best, found = f, true
		}
	}
	return !found || best.permit
}

func wfpMatches(f wfpFilter, p wfpPacket) bool {
	for _, c := range f.conds {
		ok := false
		switch c.field {
		case wfpRemoteAddr:
			ok = p.remote.IsValid() && c.prefix.Contains(p.remote)
		case wfpRemotePort:
			ok = p.rport == c.value
		case wfpLocalPort, wfpICMPType:
			ok = p.lport == c.value
		case wfpProtocol:
			ok = p.proto == c.value
		case wfpLocalInterface:
			ok = p.luid == c.value
		case wfpLoopback:
			ok = p.loopback
		}
		if !ok {
			return false
		}
	}
	return true
}

// TestWFPSemantics checks decisions of the translated filters, so weights
// and layers are right and not just rendered consistently.
func TestWFPSemantics(t *testing.T) {
	cfg := Config{TunInterface: "mirage0", AllowLAN: true,
		Servers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:443"), netip.MustParseAddrPort("[fd00::7]:443")},
		DNS:     []netip.Addr{netip.MustParseAddr("203.0.113.53")}}
	lans := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fd00:1::/64")}
	fs, err := wfpFilters(cfg, lans, wfpTestLUID)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	const other = 0x0006_0000_0b00_0000 // the physical interface
	for _, p := range []wfpPacket{
		{layer: wfpConnectV4, remote: a("198.51.100.7"), proto: wfpProtoTCP, rport: 443, luid: other, wantAllow: true},
		{layer: wfpConnectV4, remote: a("198.51.100.7"), proto: wfpProtoUDP, rport: 443, luid: other, wantAllow: true},
		{layer: wfpConnectV4, remote: a("198.51.100.7"), proto: wfpProtoTCP, rport: 80, luid: other},
		{layer: wfpConnectV6, remote: a("fd00::7"), proto: wfpProtoUDP, rport: 443, luid: other, wantAllow: true},
		{layer: wfpConnectV4, remote: a("203.0.113.1"), proto: wfpProtoTCP, rport: 443, luid: other},
		{layer: wfpConnectV4, remote: a("203.0.113.1"), proto: wfpProtoTCP, rport: 443, luid: wfpTestLUID, wantAllow: true},
		{layer: wfpConnectV6, remote: a("fd00:9::1"), proto: wfpProtoTCP, rport: 443, luid: wfpTestLUID, wantAllow: true},
		{layer: wfpRecvAcceptV4, remote: a("203.0.113.1"), proto: wfpProtoTCP, lport: 22, luid: other},
		{layer: wfpRecvAcceptV4, remote: a("203.0.113.1"), proto: wfpProtoTCP, lport: 22, luid: wfpTestLUID, wantAllow: true},
		// DNS only to the configured resolver, even through the tunnel.
		{layer: wfpConnectV4, remote: a("203.0.113.53"), proto: wfpProtoUDP, rport: 53, luid: other, wantAllow: true},
		{layer: wfpConnectV4, remote: a("203.0.113.54"), proto: wfpProtoUDP, rport: 53, luid: wfpTestLUID},
		{layer: wfpConnectV4, remote: a("192.0.2.1"), proto: wfpProtoTCP, rport: 853, luid: other},
		{layer: wfpConnectV6, remote: a("fd00:1::1"), proto: wfpProtoUDP, rport: 53, luid: other},
		// LAN, loopback, link maintenance.
		{layer: wfpConnectV4, remote: a("192.0.2.9"), proto: wfpProtoTCP, rport: 445, luid: other, wantAllow: true},
		{layer: wfpRecvAcceptV6, remote: a("fd00:1::9"), proto: wfpProtoTCP, lport: 80, luid: other, wantAllow: true},
		{layer: wfpConnectV4, remote: a("127.0.0.1"), proto: wfpProtoTCP, rport: 53, loopback: true, wantAllow: true},
		{layer: wfpRecvAcceptV6, remote: a("::1"), proto: wfpProtoTCP, lport: 8080, loopback: true, wantAllow: true},
		{layer: wfpConnectV4, remote: a("255.255.255.255"), proto: wfpProtoUDP, lport: 68, rport: 67, luid: other, wantAllow: true},
		{layer: wfpRecvAcceptV4, remote: a("192.0.2.1"), proto: wfpProtoUDP, lport: 68, rport: 67, luid: other, wantAllow: true},
		{layer: wfpConnectV6, remote: a("ff02::1:2"), proto: wfpProtoUDP, lport: 546, rport: 547, luid: other, wantAllow: true},
		{layer: wfpConnectV6, remote: a("ff02::2"), proto: wfpProtoICMPv6, lport: 133, luid: other, wantAllow: true},
		{layer: wfpRecvAcceptV6, remote: a("fe80::1"), proto: wfpProtoICMPv6, lport: 136, luid: other, wantAllow: true},
		{layer: wfpConnectV6, remote: a("fe80::1"), proto: wfpProtoICMPv6, lport: 128, luid: other},
	} {
		if got := wfpDecide(fs, p); got != p.wantAllow {
			t.Errorf("%s %s proto %d lport %d rport %d luid %#x loopback %v: allowed=%v, want %v",
				p.layer, p.remote, p.proto, p.lport, p.rport, p.luid, p.loopback, got, p.wantAllow)
		}
	}
	// Without AllowLAN the LAN is blocked.
	cfg.AllowLAN = false
	fs, err = wfpFilters(cfg, lans, wfpTestLUID)
	if err != nil {
		t.Fatal(err)
	}
	if wfpDecide(fs, wfpPacket{layer: wfpConnectV4, remote: a("192.0.2.9"), proto: wfpProtoTCP, rport: 445, luid: other}) {
		t.Error("LAN allowed without AllowLAN")
	}
}

func TestWFPLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the WFP layouts are for 64-bit Windows")
	}
	got := wfpActualLayout()
	for k, want := range wfpABILayout {
		if got[k] != want {
			t.Errorf("%s = %d, want %d", k, got[k], want)
		}
	}
	if len(got) != len(wfpABILayout) {
		t.Errorf("layout tables list different fields")
	}
}

func TestWFPGUID(t *testing.T) {
	g := mustGUID("{C38D57D1-05A7-4C33-904F-7FBCEEE60E82}")
	want := wfpGUID{Data1: 0xc38d57d1, Data2: 0x05a7, Data3: 0x4c33, Data4: [8]byte{0x90, 0x4f, 0x7f, 0xbc, 0xee, 0xe6, 0x0e, 0x82}}
	if g != want {
		t.Fatalf("parse = %+v, want %+v", g, want)
	}
	if g.String() != "{c38d57d1-05a7-4c33-904f-7fbceee60e82}" {
		t.Errorf("String = %s", g)
	}
	for _, bad := range []string{"", "c38d57d1-05a7-4c33-904f-7fbceee60e82", "{c38d57d1-05a7-4c33-904f-7fbceee60e8g}", "{c38d57d105a7-4c33-904f-7fbceee60e82-}"} {
		if _, err := wfpParseGUID(bad); err == nil {
			t.Errorf("wfpParseGUID(%q) accepted", bad)
		}
	}
	seen := map[wfpGUID]bool{wfpProviderKey: true, wfpSublayerKey: true}
	for i := 0; i < wfpMaxFilters; i++ {
		k := wfpFilterKey(i)
		if seen[k] {
			t.Fatalf("filter key %d (%s) collides", i, k)
		}
		seen[k] = true
	}
}

func TestWFPEncode(t *testing.T) {
	utf16 := func(s string) (*uint16, error) {
		if strings.ContainsRune(s, 0) {
			return nil, errors.New("NUL in string")
		}
		b := make([]uint16, len(s)+1)
		for i, r := range s {
			b[i] = uint16(r)
		}
		return &b[0], nil
	}
	f := wfpFilter{layer: wfpConnectV4, weight: 3, permit: true, name: "test", conds: []wfpCond{
		{field: wfpRemoteAddr, prefix: netip.MustParsePrefix("198.51.100.7/32")},
		{field: wfpRemoteAddr, prefix: netip.MustParsePrefix("192.0.2.0/24")},
		{field: wfpRemoteAddr, prefix: netip.MustParsePrefix("fd00::53/128")},
		{field: wfpRemoteAddr, prefix: netip.MustParsePrefix("fd00:1::/64")},
		{field: wfpRemotePort, value: 443},
		{field: wfpICMPType, value: 135},
		{field: wfpProtocol, value: wfpProtoUDP},
		{field: wfpLocalInterface, value: wfpTestLUID},
		{field: wfpLoopback},
	}}
	e, err := wfpEncode(f, 7, utf16)
	if err != nil {
		t.Fatal(err)
	}
	r := e.raw
	if r.filterKey != wfpFilterKey(7) || r.layerKey != wfpLayerKeys[wfpConnectV4] || r.subLayerKey != wfpSublayerKey ||
		*r.providerKey != wfpProviderKey || r.flags != fwpmFlagPersist {
		t.Errorf("keys/flags wrong: %+v", r)
	}
	if r.weight != (fwpValue0{typ: fwpUint8, value: 3}) || r.action.typ != fwpActionPermit {
		t.Errorf("weight %+v action %#x", r.weight, r.action.typ)
	}
	if r.numFilterConditions != 9 || r.filterCondition != &e.conds[0] {
		t.Fatalf("conditions %d %p", r.numFilterConditions, r.filterCondition)
	}
	c := e.conds
	// IPv4 host: FWP_UINT32 in host byte order.
	if c[0].fieldKey != wfpCondRemoteAddress || c[0].conditionValue != (fwpValue0{typ: fwpUint32, value: 0xc6336407}) {
		t.Errorf("v4 host: %+v", c[0])
	}
	m := wfpKept[*fwpV4AddrAndMask](t, e, c[1].conditionValue.value)
	if c[1].conditionValue.typ != fwpV4AddrMask || m.addr != 0xc0000200 || m.mask != 0xffffff00 {
		t.Errorf("v4 prefix: %+v %+v", c[1], *m)
	}
	b16 := wfpKept[*[16]byte](t, e, c[2].conditionValue.value)
	if c[2].conditionValue.typ != fwpByteArray16 || *b16 != netip.MustParseAddr("fd00::53").As16() {
		t.Errorf("v6 host: %+v %x", c[2], *b16)
	}
	m6 := wfpKept[*fwpV6AddrAndMask](t, e, c[3].conditionValue.value)
	if c[3].conditionValue.typ != fwpV6AddrMask || m6.prefixLength != 64 || m6.addr != netip.MustParseAddr("fd00:1::").As16() {
		t.Errorf("v6 prefix: %+v %+v", c[3], *m6)
	}
	if c[4].fieldKey != wfpCondRemotePort || c[4].conditionValue != (fwpValue0{typ: fwpUint16, value: 443}) {
		t.Errorf("port: %+v", c[4])
	}
	if c[5].fieldKey != wfpCondLocalPort || c[5].conditionValue != (fwpValue0{typ: fwpUint16, value: 135}) {
		t.Errorf("icmp type: %+v", c[5])
	}
	if c[6].fieldKey != wfpCondProtocol || c[6].conditionValue != (fwpValue0{typ: fwpUint8, value: 17}) {
		t.Errorf("protocol: %+v", c[6])
	}
	luid := wfpKept[*uint64](t, e, c[7].conditionValue.value)
	if c[7].fieldKey != wfpCondLocalInterface || c[7].conditionValue.typ != fwpUint64 || *luid != wfpTestLUID {
		t.Errorf("luid: %+v", c[7])
	}
	if c[8].fieldKey != wfpCondFlags || c[8].matchType != fwpMatchFlagsAll || c[8].conditionValue != (fwpValue0{typ: fwpUint32, value: 1}) {
		t.Errorf("loopback: %+v", c[8])
	}
	var nb [8]byte
	binary.LittleEndian.PutUint64(nb[:], uint64(c[0].conditionValue.value))
	if nb[0] != 0x07 { // the union's low byte holds the value's low byte
		t.Errorf("union byte order: %x", nb)
	}
	if _, err := wfpEncode(wfpFilter{name: "a\x00b"}, 0, utf16); err == nil {
		t.Error("NUL in name accepted")
	}
}

// wfpKept finds the object of type T that the encoded pointer p points to
// among those e keeps alive (no uintptr-to-pointer conversion needed).
func wfpKept[T any](t *testing.T, e *wfpEncoded, p uintptr) T {
	t.Helper()
	for _, k := range e.keep {
		if v, ok := k.(T); ok && reflect.ValueOf(v).Pointer() == p {
			return v
		}
	}
	var zero T
	t.Fatalf("pointer %#x is not to a kept %T", p, zero)
	return zero
}

// wfpFake is an in-memory filter engine with transactions.
type wfpFake struct {
	state, txn *wfpFakeState
	calls      []string
	failAdd    int // addFilter index that fails, -1 for none
	// crashAdd is the addFilter index at which the process dies (a
	// wfpCrash panic: no commit, no abort), -1 for none.
	crashAdd int
}

// wfpCrash is the panic value of a simulated crash inside the fake.
type wfpCrash struct{}

type wfpFakeState struct {
	provider, sublayer bool
	filters            map[int]wfpFilter
}

func (s *wfpFakeState) clone() *wfpFakeState {
	c := *s
	c.filters = map[int]wfpFilter{}
	for k, v := range s.filters {
		c.filters[k] = v
	}
	return &c
}

func (s *wfpFakeState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "provider=%v sublayer=%v\n", s.provider, s.sublayer)
	keys := make([]int, 0, len(s.filters))
	for k := range s.filters {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%d %s\n", k, s.filters[k])
	}
	return b.String()
}

func newWFPFake() *wfpFake {
	return &wfpFake{state: &wfpFakeState{filters: map[int]wfpFilter{}}, failAdd: -1, crashAdd: -1}
}

func (f *wfpFake) log(s string) { f.calls = append(f.calls, s) }

func (f *wfpFake) cur() *wfpFakeState {
	if f.txn == nil {
		panic("WFP call outside a transaction")
	}
	return f.txn
}

func (f *wfpFake) begin() error {
	if f.txn != nil {
		return errors.New("nested transaction")
	}
	f.log("begin")
	f.txn = f.state.clone()
	return nil
}
func (f *wfpFake) commit() error { f.log("commit"); f.state, f.txn = f.txn, nil; return nil }
func (f *wfpFake) abort() error  { f.log("abort"); f.txn = nil; return nil }
func (f *wfpFake) addProvider() error {
	f.log("add provider")
	f.cur().provider = true
	return nil
}
func (f *wfpFake) addSublayer() error {
	f.log("add sublayer")
	if !f.cur().provider {
		return errors.New("sublayer without provider")
	}
	f.cur().sublayer = true
	return nil
}
func (f *wfpFake) addFilter(i int, flt wfpFilter) error {
	f.log(fmt.Sprintf("add filter %d", i))
	if i == f.failAdd {
		return errors.New("injected failure")
	}
	if i == f.crashAdd {
		panic(wfpCrash{})
	}
	if _, ok := f.cur().filters[i]; ok {
		return errors.New("FWP_E_ALREADY_EXISTS")
	}
	if !f.cur().sublayer {
		return errors.New("filter without sublayer")
	}
	f.cur().filters[i] = flt
	return nil
}
func (f *wfpFake) deleteFilter(i int) (bool, error) {
	_, ok := f.cur().filters[i]
	delete(f.cur().filters, i)
	if ok {
		f.log(fmt.Sprintf("delete filter %d", i))
	}
	return ok, nil
}
func (f *wfpFake) deleteSublayer() error {
	f.log("delete sublayer")
	if len(f.cur().filters) > 0 {
		return errors.New("FWP_E_IN_USE")
	}
	f.cur().sublayer = false
	return nil
}
func (f *wfpFake) deleteProvider() error {
	f.log("delete provider")
	if f.cur().sublayer {
		return errors.New("FWP_E_IN_USE")
	}
	f.cur().provider = false
	return nil
}
func (f *wfpFake) filterExists(i int) (bool, error) {
	_, ok := f.state.filters[i]
	return ok, nil
}

// TestWFPInstallRemove: Enable replaces, Disable restores the empty
// engine, a failed Enable keeps the old filters, and filters left by a
// crashed process are removed by Disable from a new session.
func TestWFPInstallRemove(t *testing.T) {
	base := newWFPFake().state.String()
	fake := newWFPFake()
	big, err := wfpFilters(wfpCases[4].cfg, nil, wfpTestLUID)
	if err != nil {
		t.Fatal(err)
	}
	small, err := wfpFilters(wfpCases[0].cfg, nil, wfpTestLUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := wfpInstall(fake, big); err != nil {
		t.Fatal(err)
	}
	if on, _ := wfpActive(fake); !on || len(fake.state.filters) != len(big) {
		t.Fatalf("after install: active=%v filters=%d want %d", on, len(fake.state.filters), len(big))
	}
	if err := wfpInstall(fake, small); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	fmt.Fprintf(&want, "provider=true sublayer=true\n")
	for i, f := range small {
		fmt.Fprintf(&want, "%d %s\n", i, f)
	}
	if got := fake.state.String(); got != want.String() {
		t.Fatalf("after replace:\n%s\nwant:\n%s", got, want.String())
	}

	// A failing add aborts: the previous filters stay.
	before := fake.state.String()
	fake.failAdd = 2
	if err := wfpInstall(fake, big); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("install with failing add = %v", err)
	}
	if fake.calls[len(fake.calls)-1] != "abort" || fake.state.String() != before {
		t.Fatalf("failed install changed state or did not abort: %v\n%s", fake.calls[len(fake.calls)-5:], fake.state)
	}
	fake.failAdd = -1

	// Crash: the process is gone, the persistent objects stay; a new
	// session (cleanup) removes them.
	crashed := &wfpFake{state: fake.state, failAdd: -1, crashAdd: -1}
	if on, _ := wfpActive(crashed); !on {
		t.Fatal("filters did not survive the crash")
	}
	if err := wfpRemove(crashed); err != nil {
		t.Fatal(err)
	}
	if got := crashed.state.String(); got != base {
		t.Fatalf("after remove:\n%s\nwant:\n%s", got, base)
	}
	if on, _ := wfpActive(crashed); on {
		t.Fatal("still active after remove")
	}
	// Removing again is fine.
	if err := wfpRemove(crashed); err != nil {
		t.Fatal(err)
	}
}

// TestWFPSurvivesCrash: for every golden config, the persistent filters
// outlive the process that installed them, also when it dies in the middle
// of replacing them (the open transaction is discarded with its session):
// a new session finds exactly the installed filters, which still block
// the outside; its Disable (wfpRemove) brings the engine back to empty.
func TestWFPSurvivesCrash(t *testing.T) {
	for _, c := range wfpCases {
		t.Run(c.name, func(t *testing.T) {
			fake := newWFPFake()
			base := fake.state.String()
			fs, err := wfpFilters(c.cfg, c.lans, c.luid)
			if err != nil {
				t.Fatal(err)
			}
			if err := wfpInstall(fake, fs); err != nil {
				t.Fatal(err)
			}
			installed := fake.state.String()

			// The process dies in the middle of an Enable that replaces the
			// filters with another config's.
			other := wfpCases[4].cfg // dns
			if c.name == "dns" {
				other = wfpCases[0].cfg
			}
			next, err := wfpFilters(other, nil, wfpTestLUID)
			if err != nil {
				t.Fatal(err)
			}
			fake.crashAdd = len(next) / 2
			func() {
				defer func() {
					if r := recover(); r != (wfpCrash{}) {
						panic(r)
					}
				}()
				_ = wfpInstall(fake, next)
				t.Fatal("the simulated crash did not happen")
			}()
			if fake.txn == nil {
				t.Fatal("the crash left no open transaction (the test simulates nothing)")
			}

			// A new process: a new session on the same persistent state.
			crashed := &wfpFake{state: fake.state, failAdd: -1, crashAdd: -1}
			if got := crashed.state.String(); got != installed {
				t.Fatalf("after the crash:\n%s\nwant what was installed:\n%s", got, installed)
			}
			if on, err := wfpActive(crashed); !on || err != nil {
				t.Fatalf("kill switch not active after the crash: %v %v", on, err)
			}
			if !crashed.state.provider || !crashed.state.sublayer || len(crashed.state.filters) != len(fs) {
				t.Fatalf("after the crash: provider %v sublayer %v, %d filters, want %d",
					crashed.state.provider, crashed.state.sublayer, len(crashed.state.filters), len(fs))
			}
			left := make([]wfpFilter, len(fs))
			for i := range fs {
				left[i] = crashed.state.filters[i]
			}
			wfpCheckBlocking(t, left, c.cfg, c.lans, c.luid)

			if err := wfpRemove(crashed); err != nil {
				t.Fatal(err)
			}
			if got := crashed.state.String(); got != base {
				t.Errorf("after Disable:\n%s\nwant:\n%s", got, base)
			}
			if on, _ := wfpActive(crashed); on {
				t.Error("still active after Disable")
			}
		})
	}
}

// wfpCheckBlocking checks the decisions of the filters a crashed process
// left for cfg: the outside is blocked both ways, the server, loopback and
// (when it exists) the tunnel are allowed, the LAN only with AllowLAN.
func wfpCheckBlocking(t *testing.T, fs []wfpFilter, cfg Config, lans []netip.Prefix, luid uint64) {
	t.Helper()
	a := netip.MustParseAddr
	const phys = 0x0006_0000_0b00_0000 // the physical interface
	srv := cfg.Servers[0]
	lanAllowed := cfg.AllowLAN && slices.ContainsFunc(lans, func(p netip.Prefix) bool { return p.Contains(a("192.0.2.9")) })
	for _, p := range []wfpPacket{
		{layer: wfpConnectV4, remote: a("203.0.113.10"), proto: wfpProtoTCP, rport: 443, luid: phys},
		{layer: wfpConnectV6, remote: a("fd00:9::1"), proto: wfpProtoTCP, rport: 443, luid: phys},
		{layer: wfpConnectV4, remote: a("203.0.113.10"), proto: wfpProtoUDP, rport: 53, luid: phys},
		{layer: wfpRecvAcceptV4, remote: a("203.0.113.10"), proto: wfpProtoTCP, lport: 22, luid: phys},
		{layer: wfpRecvAcceptV6, remote: a("fd00:9::1"), proto: wfpProtoTCP, lport: 22, luid: phys},
		{layer: wfpConnectV4, remote: srv.Addr(), proto: wfpProtoTCP, rport: uint64(srv.Port()), luid: phys, wantAllow: true},
		{layer: wfpConnectV4, remote: a("127.0.0.1"), proto: wfpProtoTCP, rport: 8080, loopback: true, wantAllow: true},
		{layer: wfpConnectV4, remote: a("203.0.113.10"), proto: wfpProtoTCP, rport: 443, luid: wfpTestLUID, wantAllow: luid != 0},
		{layer: wfpConnectV4, remote: a("192.0.2.9"), proto: wfpProtoTCP, rport: 445, luid: phys, wantAllow: lanAllowed},
	} {
		if got := wfpDecide(fs, p); got != p.wantAllow {
			t.Errorf("after the crash %s %s proto %d lport %d rport %d luid %#x loopback %v: allowed=%v, want %v",
				p.layer, p.remote, p.proto, p.lport, p.rport, p.luid, p.loopback, got, p.wantAllow)
		}
	}
}

func TestWFPTranslateErrors(t *testing.T) {
	for _, r := range []rule{
		{iif: "mirage0", verdict: "accept"},
		{oif: "eth0", verdict: "accept"},
		{l4proto: "sctp", dport: 1, verdict: "accept"},
		{oif: "lo", verdict: "reject"},
	} {
		if _, err := wfpTranslate(r, "mirage0", wfpTestLUID); err == nil {
			t.Errorf("wfpTranslate(%+v) accepted", r)
		}
	}
}
