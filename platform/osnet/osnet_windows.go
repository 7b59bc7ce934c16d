package osnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/mirage-vpn/mirage/core/netcfg"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// NRPT rule tables: the local one, and the group policy one that replaces
// it whenever it has rules.
const (
	nrptLocalBase = `SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig`
	nrptGPBase    = `SOFTWARE\Policies\Microsoft\Windows NT\DNSClient\DnsPolicyConfig`
	// nrptOverrideDNS is ConfigOptions' "use GenericDNSServers" bit.
	nrptOverrideDNS = 0x8
	nrptVersion     = 2
)

var (
	modUserenv                = windows.NewLazySystemDLL("userenv.dll")
	procRefreshPolicyEx       = modUserenv.NewProc("RefreshPolicyEx")
	modDnsapi                 = windows.NewLazySystemDLL("dnsapi.dll")
	procDnsFlushResolverCache = modDnsapi.NewProc("DnsFlushResolverCache")
)

// New returns the Windows configurator (IP Helper via winipcfg, DNS on the
// tunnel plus an NRPT rule) keeping its journal in stateDir. It fails if a
// journal of an earlier run is still there: call Cleanup first.
func New(log *slog.Logger, stateDir string) (netcfg.Configurator, error) {
	return newWinConfigurator(log, stateDir, winIPHelper{})
}

// Cleanup undoes what the journal in stateDir records (a run that crashed
// or was killed) and removes it. Without a journal it does nothing. The
// Wintun adapter itself is removed by the driver when its process ends.
func Cleanup(log *slog.Logger, stateDir string) error {
	return winCleanup(log, stateDir, winIPHelper{})
}

// winIPHelper is the real winAPI.
type winIPHelper struct{}

func winFamily(v6 bool) winipcfg.AddressFamily {
	if v6 {
		return windows.AF_INET6
	}
	return windows.AF_INET
}

func winNotFound(err error) bool {
	return errors.Is(err, windows.ERROR_NOT_FOUND) || errors.Is(err, windows.ERROR_FILE_NOT_FOUND)
}

func (winIPHelper) luidByName(name string) (uint64, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	luid, err := winipcfg.LUIDFromIndex(uint32(ifc.Index))
	if err != nil {
		return 0, fmt.Errorf("LUID of interface %d: %w", ifc.Index, err)
	}
	return uint64(luid), nil
}

func (winIPHelper) setMTU(luid uint64, v6 bool, mtu int) error {
	row, err := winipcfg.LUID(luid).IPInterface(winFamily(v6))
	if err != nil {
		return err
	}
	row.NLMTU = uint32(mtu)
	if !v6 {
		row.SitePrefixLength = 0 // SetIpInterfaceEntry rejects anything else for IPv4
	}
	return row.Set()
}

func (winIPHelper) addAddress(luid uint64, p netip.Prefix) error {
	err := winipcfg.LUID(luid).AddIPAddress(p)
	if errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS) {
		return nil
	}
	return err
}

func (winIPHelper) deleteAddress(luid uint64, p netip.Prefix) error {
	err := winipcfg.LUID(luid).DeleteIPAddress(p)
	if winNotFound(err) {
		return nil
	}
	return err
}

func (winIPHelper) routeTable(v6 bool) ([]winRoute, error) {
	rows, err := winipcfg.GetIPForwardTable2(winFamily(v6))
	if err != nil {
		return nil, err
	}
	ifMetric := map[winipcfg.LUID]uint32{}
	out := make([]winRoute, 0, len(rows))
	for i := range rows {
		row := &rows[i]
		dst := row.DestinationPrefix.Prefix()
		if !dst.IsValid() {
			continue
		}
		m, ok := ifMetric[row.InterfaceLUID]
		if !ok {
			if ifc, err := row.InterfaceLUID.IPInterface(winFamily(v6)); err == nil {
				m = ifc.Metric
			}
			ifMetric[row.InterfaceLUID] = m
		}
		r := winRoute{Dst: dst.Masked(), LUID: uint64(row.InterfaceLUID), Metric: row.Metric + m}
		if nh := row.NextHop.Addr(); nh.IsValid() && !nh.IsUnspecified() {
			r.NextHop = nh.Unmap()
		}
		out = append(out, r)
	}
	return out, nil
}

// winNextHop is r's next hop for the API: the unspecified address on-link.
func winNextHop(r winRoute) netip.Addr {
	if r.NextHop.IsValid() {
		return r.NextHop
	}
	if r.Dst.Addr().Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func (winIPHelper) addRoute(r winRoute) (bool, error) {
	err := winipcfg.LUID(r.LUID).AddRoute(r.Dst, winNextHop(r), r.Metric)
	if errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS) {
		return false, nil
	}
	return err == nil, err
}

func (winIPHelper) deleteRoute(r winRoute) error {
	err := winipcfg.LUID(r.LUID).DeleteRoute(r.Dst, winNextHop(r))
	if winNotFound(err) {
		return nil
	}
	return err
}

func (winIPHelper) setDNS(luid uint64, v6 bool, servers []netip.Addr) error {
	err := winipcfg.LUID(luid).SetDNS(winFamily(v6), servers, nil)
	if len(servers) == 0 && winNotFound(err) {
		return nil // the adapter is gone, and its settings with it
	}
	return err
}

func (winIPHelper) nrptGroupPolicy() (bool, error) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, nrptGPBase, registry.READ)
	if errors.Is(err, registry.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer k.Close()
	names, err := k.ReadSubKeyNames(0)
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if !strings.EqualFold(n, winNRPTKey) {
			return true, nil
		}
	}
	return false, nil
}

func winNRPTPath(gp bool, key string) string {
	if gp {
		return nrptGPBase + `\` + key
	}
	return nrptLocalBase + `\` + key
}

func (winIPHelper) setNRPT(gp bool, key string, servers []netip.Addr) error {
	path := winNRPTPath(gp, key)
	k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, path, registry.SET_VALUE)
	if err != nil {
		return fmt.Errorf("create HKLM\\%s: %w", path, err)
	}
	defer k.Close()
	list := make([]string, len(servers))
	for i, s := range servers {
		list[i] = s.String()
	}
	for _, set := range []func() error{
		func() error { return k.SetDWordValue("Version", nrptVersion) },
		func() error { return k.SetStringsValue("Name", []string{"."}) },
		func() error { return k.SetStringValue("GenericDNSServers", strings.Join(list, ";")) },
		func() error { return k.SetDWordValue("ConfigOptions", nrptOverrideDNS) },
		func() error { return k.SetStringValue("Comment", "Mirage VPN: all names via the tunnel's DNS") },
	} {
		if err := set(); err != nil {
			return fmt.Errorf("write HKLM\\%s: %w", path, err)
		}
	}
	return nil
}

func (winIPHelper) deleteNRPT(gp bool, key string) error {
	path := winNRPTPath(gp, key)
	err := registry.DeleteKey(registry.LOCAL_MACHINE, path)
	if err != nil && !errors.Is(err, registry.ErrNotExist) {
		return fmt.Errorf("delete HKLM\\%s: %w", path, err)
	}
	return nil
}

func (winIPHelper) refreshPolicy() error {
	if err := procRefreshPolicyEx.Find(); err != nil {
		return err
	}
	const rpForce = 1
	r, _, err := procRefreshPolicyEx.Call(1, rpForce) // computer policy
	if r == 0 {
		return fmt.Errorf("RefreshPolicyEx: %w", err)
	}
	return nil
}

func (winIPHelper) flushResolverCache() error {
	if err := procDnsFlushResolverCache.Find(); err != nil {
		return err
	}
	r, _, err := procDnsFlushResolverCache.Call()
	if r == 0 {
		return fmt.Errorf("DnsFlushResolverCache: %w", err)
	}
	return nil
}
