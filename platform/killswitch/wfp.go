package killswitch

// The Windows kill switch is a set of WFP (Windows Filtering Platform)
// filters in mirage's own persistent sublayer. This file translates the
// platform-neutral rule model (rules) into an ordered filter list and
// renders it as text; it has no build tag so the translation is tested on
// every OS. The syscalls that install the list are in wfp_windows.go.
//
// Mapping of the model onto WFP:
//   - The output chain becomes filters at the ALE connect layers
//     (FWPM_LAYER_ALE_AUTH_CONNECT_V4/V6, the first packet of every
//     outgoing flow) and, for rules about an interface, a LAN or link
//     maintenance, also at the ALE receive/accept layers
//     (FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4/V6, every incoming flow). ALE
//     authorizes flows, not packets: the replies of an allowed flow pass,
//     which is what the Linux ruleset achieves with its output rules.
//   - Each of the four layers ends in a block-all filter, the analogue of
//     the chain's policy drop; blocking incoming flows at recv/accept keeps
//     outside hosts from getting answers, as on Linux.
//   - First-match order becomes weights: rules keep their order, and the
//     weight drops by one wherever the verdict changes, so a DNS block
//     outranks the tunnel and LAN permits after it but not the loopback,
//     server and allowed-resolver permits before it. Within a run of equal
//     verdicts the order does not matter.
//   - The forward chain has no ALE equivalent (ALE sees only local
//     sockets), so it is not translated.

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// wfpLayer is one of the four ALE layers mirage filters.
type wfpLayer uint8

const (
	wfpConnectV4 wfpLayer = iota
	wfpConnectV6
	wfpRecvAcceptV4
	wfpRecvAcceptV6
)

var wfpLayerNames = [...]string{
	wfpConnectV4:    "ALE_AUTH_CONNECT_V4",
	wfpConnectV6:    "ALE_AUTH_CONNECT_V6",
	wfpRecvAcceptV4: "ALE_AUTH_RECV_ACCEPT_V4",
	wfpRecvAcceptV6: "ALE_AUTH_RECV_ACCEPT_V6",
}

func (l wfpLayer) String() string { return wfpLayerNames[l] }

func (l wfpLayer) v6() bool { return l == wfpConnectV6 || l == wfpRecvAcceptV6 }

// wfpField is a filter condition field (FWPM_CONDITION_*).
type wfpField uint8

const (
	wfpRemoteAddr     wfpField = iota // IP_REMOTE_ADDRESS, prefix match
	wfpRemotePort                     // IP_REMOTE_PORT
	wfpLocalPort                      // IP_LOCAL_PORT
	wfpProtocol                       // IP_PROTOCOL
	wfpLocalInterface                 // IP_LOCAL_INTERFACE (LUID)
	wfpLoopback                       // FLAGS has FWP_CONDITION_FLAG_IS_LOOPBACK
	wfpICMPType                       // ICMP_TYPE (an alias of IP_LOCAL_PORT at ALE)
)

// IP protocol numbers.
const (
	wfpProtoICMPv6 = 58
	wfpProtoTCP    = 6
	wfpProtoUDP    = 17
)

// wfpCond is one condition; which value field is used depends on field.
type wfpCond struct {
	field  wfpField
	prefix netip.Prefix // wfpRemoteAddr
	value  uint64       // ports, protocol, ICMP type, LUID
}

func (c wfpCond) String() string {
	switch c.field {
	case wfpRemoteAddr:
		if c.prefix.IsSingleIP() {
			return "remote-addr=" + c.prefix.Addr().String()
		}
		return "remote-addr=" + c.prefix.String()
	case wfpRemotePort:
		return fmt.Sprintf("remote-port=%d", c.value)
	case wfpLocalPort:
		return fmt.Sprintf("local-port=%d", c.value)
	case wfpProtocol:
		switch c.value {
		case wfpProtoTCP:
			return "proto=tcp"
		case wfpProtoUDP:
			return "proto=udp"
		case wfpProtoICMPv6:
			return "proto=icmpv6"
		}
		return fmt.Sprintf("proto=%d", c.value)
	case wfpLocalInterface:
		return fmt.Sprintf("local-interface-luid=%#x", c.value)
	case wfpLoopback:
		return "flags-all-set=IS_LOOPBACK"
	case wfpICMPType:
		return fmt.Sprintf("icmp-type=%d", c.value)
	}
	return fmt.Sprintf("field%d=%d", c.field, c.value)
}

// wfpFilter is one WFP filter in mirage's sublayer.
type wfpFilter struct {
	layer  wfpLayer
	weight uint8 // FWP_UINT8 weight, 0..15
	permit bool  // else block
	conds  []wfpCond
	// name is the display name, for netsh wfp show filters.
	name string
}

func (f wfpFilter) String() string {
	verdict := "block"
	if f.permit {
		verdict = "permit"
	}
	var cs []string
	for _, c := range f.conds {
		cs = append(cs, c.String())
	}
	if len(cs) == 0 {
		cs = append(cs, "all")
	}
	return fmt.Sprintf("%-23s w=%-2d %-6s %s", f.layer, f.weight, verdict, strings.Join(cs, " "))
}

// wfpMaxWeight is the highest FWP_UINT8 weight.
const wfpMaxWeight = 15

// wfpFilters translates the output chain of the model for cfg into WFP
// filters, in rule order, followed by a block-all per layer. tunLUID is
// the tunnel interface's LUID, 0 while it does not exist.
func wfpFilters(cfg Config, lans []netip.Prefix, tunLUID uint64) ([]wfpFilter, error) {
	var out []rule
	for _, c := range rules(cfg, lans) {
		if c.name == "output" {
			out = c.rules
		}
	}
	// Weights: one level per run of equal verdicts, the block-alls at 0.
	levels := 1
	for i := 1; i < len(out); i++ {
		if out[i].verdict != out[i-1].verdict {
			levels++
		}
	}
	if levels > wfpMaxWeight {
		return nil, fmt.Errorf("killswitch: %d verdict changes do not fit WFP weights", levels)
	}
	var fs []wfpFilter
	weight := uint8(levels)
	for i, r := range out {
		if i > 0 && r.verdict != out[i-1].verdict {
			weight--
		}
		f, err := wfpTranslate(r, cfg.TunInterface, tunLUID)
		if err != nil {
			return nil, err
		}
		for j := range f {
			f[j].weight = weight
		}
		fs = append(fs, f...)
	}
	for _, l := range []wfpLayer{wfpConnectV4, wfpConnectV6, wfpRecvAcceptV4, wfpRecvAcceptV6} {
		fs = append(fs, wfpFilter{layer: l, weight: 0, name: "block everything else"})
	}
	return fs, nil
}

// wfpTranslate turns one model rule into filters on the layers it applies
// to: rules about a remote service (a destination port without a source
// port: servers, DNS) only authorize outgoing flows; interface, LAN, DHCP
// and ND rules authorize flows in both directions.
func wfpTranslate(r rule, tun string, tunLUID uint64) ([]wfpFilter, error) {
	if r.iif != "" {
		return nil, fmt.Errorf("killswitch: input-interface rule %q has no WFP translation", r.iif)
	}
	var conds []wfpCond
	name := ""
	v4, v6 := true, true
	switch r.oif {
	case "":
	case "lo":
		conds = append(conds, wfpCond{field: wfpLoopback})
		name = "loopback"
	case tun:
		if tunLUID == 0 {
			// The tunnel device does not exist yet (Enable runs before
			// the first connect): nothing to permit on it.
			return nil, nil
		}
		conds = append(conds, wfpCond{field: wfpLocalInterface, value: tunLUID})
		name = "tunnel interface"
	default:
		return nil, fmt.Errorf("killswitch: rule for interface %q has no WFP translation", r.oif)
	}
	if r.daddr.IsValid() {
		v4, v6 = r.daddr.Addr().Is4(), r.daddr.Addr().Is6()
		conds = append(conds, wfpCond{field: wfpRemoteAddr, prefix: r.daddr.Masked()})
	}
	switch r.l4proto {
	case "":
	case "tcp":
		conds = append(conds, wfpCond{field: wfpProtocol, value: wfpProtoTCP})
	case "udp":
		conds = append(conds, wfpCond{field: wfpProtocol, value: wfpProtoUDP})
	case "icmpv6":
		v4 = false
		conds = append(conds, wfpCond{field: wfpProtocol, value: wfpProtoICMPv6},
			wfpCond{field: wfpICMPType, value: uint64(r.icmpType)})
		name = "neighbor discovery"
	default:
		return nil, fmt.Errorf("killswitch: protocol %q has no WFP translation", r.l4proto)
	}
	if r.sport != 0 {
		conds = append(conds, wfpCond{field: wfpLocalPort, value: uint64(r.sport)})
	}
	if r.dport != 0 {
		conds = append(conds, wfpCond{field: wfpRemotePort, value: uint64(r.dport)})
	}
	// DHCP: the client's port pair is v4 68/67, v6 546/547.
	switch r.sport {
	case 68:
		v6, name = false, "dhcp"
	case 546:
		v4, name = false, "dhcpv6"
	}
	if name == "" {
		switch {
		case r.dport != 0 && (r.dport == 53 || r.dport == 853):
			name = "dns"
		case r.dport != 0:
			name = "vpn server"
		default:
			name = "local network"
		}
	}
	if r.verdict != "accept" && r.verdict != "drop" {
		return nil, fmt.Errorf("killswitch: verdict %q has no WFP translation", r.verdict)
	}
	permit := r.verdict == "accept"
	outOnly := r.dport != 0 && r.sport == 0
	var layers []wfpLayer
	if v4 {
		layers = append(layers, wfpConnectV4)
	}
	if v6 {
		layers = append(layers, wfpConnectV6)
	}
	if !outOnly {
		if v4 {
			layers = append(layers, wfpRecvAcceptV4)
		}
		if v6 {
			layers = append(layers, wfpRecvAcceptV6)
		}
	}
	fs := make([]wfpFilter, 0, len(layers))
	for _, l := range layers {
		verb := "block "
		if permit {
			verb = "permit "
		}
		fs = append(fs, wfpFilter{layer: l, permit: permit, conds: conds, name: verb + name})
	}
	return fs, nil
}

// wfpRender prints the filter list (for logs and golden tests).
func wfpRender(fs []wfpFilter) string {
	var b strings.Builder
	fmt.Fprintf(&b, "provider %s %s (persistent)\n", wfpProviderName, wfpProviderKeyString)
	fmt.Fprintf(&b, "sublayer %s %s weight=%#x (persistent)\n", wfpSublayerName, wfpSublayerKeyString, wfpSublayerWeight)
	for i, f := range fs {
		fmt.Fprintf(&b, "%3d %s  # %s\n", i, f, f.name)
	}
	return b.String()
}

// Identity of mirage's WFP objects. The keys are fixed so Disable (and a
// later run after a crash or reboot) finds the persistent objects again.
const (
	wfpProviderName      = "Mirage VPN"
	wfpSublayerName      = "Mirage VPN kill switch"
	wfpProviderKeyString = "{6d697261-6765-4b53-8000-70726f766472}"
	wfpSublayerKeyString = "{6d697261-6765-4b53-8000-7375626c6179}"
	// wfpSublayerWeight is the highest sublayer weight, so mirage's
	// sublayer is evaluated first; its blocks cannot be overridden by a
	// permit in another sublayer (a block in any sublayer wins).
	wfpSublayerWeight = 0xffff
)

// wfpEngine is the seam over the WFP management API (fwpuclnt.dll): the
// real one is in wfp_windows.go, a recording fake in the tests. Adds of an
// existing provider or sublayer and deletes of a missing one succeed.
type wfpEngine interface {
	begin() error
	commit() error
	abort() error
	addProvider() error
	addSublayer() error
	// addFilter adds f under the fixed key wfpFilterKey(index).
	addFilter(index int, f wfpFilter) error
	// deleteFilter reports false when there is no filter with that key.
	deleteFilter(index int) (bool, error)
	deleteSublayer() error
	deleteProvider() error
	filterExists(index int) (bool, error)
}

// wfpProbeGap is how many absent keys in a row end the search for our
// filters (they are always added contiguously, in one transaction).
const wfpProbeGap = 32

// wfpInstall replaces all of mirage's filters with fs in one transaction:
// there is never a moment without the kill switch, and a failure leaves
// the previous filters in place.
func wfpInstall(e wfpEngine, fs []wfpFilter) (err error) {
	if len(fs) > wfpMaxFilters {
		return fmt.Errorf("killswitch: %d filters exceed the limit of %d", len(fs), wfpMaxFilters)
	}
	if err := e.begin(); err != nil {
		return fmt.Errorf("begin WFP transaction: %w", err)
	}
	defer func() {
		if err != nil {
			if aerr := e.abort(); aerr != nil {
				err = errors.Join(err, fmt.Errorf("abort WFP transaction: %w", aerr))
			}
		}
	}()
	if err := e.addProvider(); err != nil {
		return fmt.Errorf("add WFP provider: %w", err)
	}
	if err := e.addSublayer(); err != nil {
		return fmt.Errorf("add WFP sublayer: %w", err)
	}
	if err := wfpDeleteFilters(e); err != nil {
		return err
	}
	for i, f := range fs {
		if err := e.addFilter(i, f); err != nil {
			return fmt.Errorf("add WFP filter %d (%s): %w", i, f, err)
		}
	}
	if err := e.commit(); err != nil {
		return fmt.Errorf("commit WFP transaction: %w", err)
	}
	return nil
}

// wfpRemove deletes every filter, the sublayer and the provider in one
// transaction; nothing installed is not an error.
func wfpRemove(e wfpEngine) (err error) {
	if err := e.begin(); err != nil {
		return fmt.Errorf("begin WFP transaction: %w", err)
	}
	defer func() {
		if err != nil {
			if aerr := e.abort(); aerr != nil {
				err = errors.Join(err, fmt.Errorf("abort WFP transaction: %w", aerr))
			}
		}
	}()
	if err := wfpDeleteFilters(e); err != nil {
		return err
	}
	if err := e.deleteSublayer(); err != nil {
		return fmt.Errorf("delete WFP sublayer: %w", err)
	}
	if err := e.deleteProvider(); err != nil {
		return fmt.Errorf("delete WFP provider: %w", err)
	}
	if err := e.commit(); err != nil {
		return fmt.Errorf("commit WFP transaction: %w", err)
	}
	return nil
}

// wfpDeleteFilters deletes mirage's filters by their fixed keys, probing
// until wfpProbeGap keys in a row are absent.
func wfpDeleteFilters(e wfpEngine) error {
	gap := 0
	for i := 0; i < wfpMaxFilters && gap < wfpProbeGap; i++ {
		found, err := e.deleteFilter(i)
		if err != nil {
			return fmt.Errorf("delete WFP filter %d: %w", i, err)
		}
		if found {
			gap = 0
		} else {
			gap++
		}
	}
	return nil
}

// wfpActive reports whether mirage's first filter exists.
func wfpActive(e wfpEngine) (bool, error) {
	ok, err := e.filterExists(0)
	if err != nil {
		return false, fmt.Errorf("killswitch: look up WFP filter: %w", err)
	}
	return ok, nil
}
