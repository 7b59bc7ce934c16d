package killswitch

// C layouts of the fwpmtypes.h structures mirage passes to fwpuclnt.dll,
// and the encoding of a wfpFilter into them. They are written for 64-bit
// Windows (amd64, arm64); Go lays structs out the same way on every OS of
// one architecture, so the layout test runs on Linux too. Nothing here
// makes a syscall.

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// wfpGUID has the layout of a Windows GUID.
type wfpGUID struct {
	Data1 uint32
	Data2 uint16
	Data3 uint16
	Data4 [8]byte
}

// wfpParseGUID parses "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}".
func wfpParseGUID(s string) (wfpGUID, error) {
	var g wfpGUID
	if len(s) != 38 || s[0] != '{' || s[37] != '}' || s[9] != '-' || s[14] != '-' || s[19] != '-' || s[24] != '-' {
		return g, fmt.Errorf("invalid GUID %q", s)
	}
	hex := s[1:9] + s[10:14] + s[15:19] + s[20:24] + s[25:37]
	var b [16]byte
	for i := range b {
		hi, ok1 := wfpHexDigit(hex[2*i])
		lo, ok2 := wfpHexDigit(hex[2*i+1])
		if !ok1 || !ok2 {
			return g, fmt.Errorf("invalid GUID %q", s)
		}
		b[i] = hi<<4 | lo
	}
	g.Data1 = binary.BigEndian.Uint32(b[0:4])
	g.Data2 = binary.BigEndian.Uint16(b[4:6])
	g.Data3 = binary.BigEndian.Uint16(b[6:8])
	copy(g.Data4[:], b[8:])
	return g, nil
}

func wfpHexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (g wfpGUID) String() string {
	return fmt.Sprintf("{%08x-%04x-%04x-%02x%02x-%x}", g.Data1, g.Data2, g.Data3, g.Data4[0], g.Data4[1], g.Data4[2:])
}

// mustGUID is for the constant GUIDs below.
func mustGUID(s string) wfpGUID {
	g, err := wfpParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// Layer and condition keys from fwpmu.h.
var (
	wfpLayerKeys = [...]wfpGUID{
		wfpConnectV4:    mustGUID("{c38d57d1-05a7-4c33-904f-7fbceee60e82}"),
		wfpConnectV6:    mustGUID("{4a72393b-319f-44bc-84c3-ba54dcb3b6b4}"),
		wfpRecvAcceptV4: mustGUID("{e1cd9fe7-f4b5-4273-96c0-592e487b8650}"),
		wfpRecvAcceptV6: mustGUID("{a3b42c97-9f04-4672-b87e-cee9c483257f}"),
	}
	wfpCondLocalInterface = mustGUID("{4cd62a49-59c3-4969-b7f3-bda5d32890a4}")
	wfpCondRemoteAddress  = mustGUID("{b235ae9a-1d64-49b8-a44c-5ff3d9095045}")
	wfpCondProtocol       = mustGUID("{3971ef2b-623e-4f9a-8cb1-6e79b806b9a7}")
	wfpCondLocalPort      = mustGUID("{0c1ba1af-5765-453f-af22-a8f791ac775b}") // also ICMP_TYPE at ALE
	wfpCondRemotePort     = mustGUID("{c35a604d-d22b-4e1a-91b4-68f674ee674b}")
	wfpCondFlags          = mustGUID("{632ce23b-5167-435c-86d7-e903684aa80c}")

	wfpProviderKey = mustGUID(wfpProviderKeyString)
	wfpSublayerKey = mustGUID(wfpSublayerKeyString)
)

// wfpFilterKey is the fixed key of mirage's i-th filter: the sublayer key
// with i in the last two bytes. Fixed keys let Disable find the filters
// again after a crash or reboot without enumerating.
func wfpFilterKey(i int) wfpGUID {
	g := wfpSublayerKey
	g.Data3 = 0x4600 // distinct from the sublayer key itself
	g.Data4[6] = byte(i >> 8)
	g.Data4[7] = byte(i)
	return g
}

// wfpMaxFilters bounds the filter list (and Disable's key probing).
const wfpMaxFilters = 1 << 12

// FWP_DATA_TYPE values.
const (
	fwpEmpty          = 0
	fwpUint8          = 1
	fwpUint16         = 2
	fwpUint32         = 3
	fwpUint64         = 4
	fwpByteArray16    = 11
	fwpV4AddrMask     = 0x100
	fwpV6AddrMask     = 0x101
	fwpMatchEqual     = 0
	fwpMatchFlagsAll  = 6
	fwpActionBlock    = 0x1001
	fwpActionPermit   = 0x1002
	fwpFlagLoopback   = 1
	fwpmFlagPersist   = 1 // FWPM_{PROVIDER,SUBLAYER,FILTER}_FLAG_PERSISTENT
	rpcCAuthnWinNT    = 10
	wfpTxnWaitTimeout = 10000 // ms
)

// fwpValue0 is FWP_VALUE0 and FWP_CONDITION_VALUE0: a type tag and a
// union holding small integers inline and everything else by pointer.
type fwpValue0 struct {
	typ   uint32
	value uintptr
}

type fwpByteBlob struct {
	size uint32
	data *byte
}

type fwpmDisplayData0 struct {
	name        *uint16
	description *uint16
}

type fwpV4AddrAndMask struct {
	addr uint32 // host byte order
	mask uint32
}

type fwpV6AddrAndMask struct {
	addr         [16]byte
	prefixLength uint8
}

type fwpmFilterCondition0 struct {
	fieldKey       wfpGUID
	matchType      uint32
	conditionValue fwpValue0
}

type fwpmAction0 struct {
	typ        uint32
	filterType wfpGUID // union with calloutKey
}

type fwpmFilter0 struct {
	filterKey           wfpGUID
	displayData         fwpmDisplayData0
	flags               uint32
	providerKey         *wfpGUID
	providerData        fwpByteBlob
	layerKey            wfpGUID
	subLayerKey         wfpGUID
	weight              fwpValue0
	numFilterConditions uint32
	filterCondition     *fwpmFilterCondition0
	action              fwpmAction0
	_                   [4]byte // the following union holds a UINT64
	providerContextKey  wfpGUID // union with rawContext
	reserved            *wfpGUID
	filterID            uint64
	effectiveWeight     fwpValue0
}

type fwpmSession0 struct {
	sessionKey           wfpGUID
	displayData          fwpmDisplayData0
	flags                uint32
	txnWaitTimeoutInMSec uint32
	processID            uint32
	sid                  uintptr
	username             *uint16
	kernelMode           int32
}

type fwpmProvider0 struct {
	providerKey  wfpGUID
	displayData  fwpmDisplayData0
	flags        uint32
	providerData fwpByteBlob
	serviceName  *uint16
}

type fwpmSublayer0 struct {
	subLayerKey  wfpGUID
	displayData  fwpmDisplayData0
	flags        uint32
	providerKey  *wfpGUID
	providerData fwpByteBlob
	weight       uint16
}

// wfpABILayout are the 64-bit sizes and offsets from the Windows SDK that
// the structs above must have (checked by tests).
var wfpABILayout = map[string]uintptr{
	"FWP_VALUE0":                             16,
	"FWP_VALUE0.value":                       8,
	"FWP_BYTE_BLOB":                          16,
	"FWPM_DISPLAY_DATA0":                     16,
	"FWP_V6_ADDR_AND_MASK":                   17,
	"FWPM_FILTER_CONDITION0":                 40,
	"FWPM_FILTER_CONDITION0.matchType":       16,
	"FWPM_FILTER_CONDITION0.conditionValue":  24,
	"FWPM_FILTER0":                           200,
	"FWPM_FILTER0.displayData":               16,
	"FWPM_FILTER0.flags":                     32,
	"FWPM_FILTER0.providerKey":               40,
	"FWPM_FILTER0.providerData":              48,
	"FWPM_FILTER0.layerKey":                  64,
	"FWPM_FILTER0.subLayerKey":               80,
	"FWPM_FILTER0.weight":                    96,
	"FWPM_FILTER0.numFilterConditions":       112,
	"FWPM_FILTER0.filterCondition":           120,
	"FWPM_FILTER0.action":                    128,
	"FWPM_FILTER0.providerContextKey":        152,
	"FWPM_FILTER0.reserved":                  168,
	"FWPM_FILTER0.filterId":                  176,
	"FWPM_FILTER0.effectiveWeight":           184,
	"FWPM_SESSION0":                          72,
	"FWPM_SESSION0.flags":                    32,
	"FWPM_SESSION0.txnWaitTimeoutInMSec":     36,
	"FWPM_SESSION0.processId":                40,
	"FWPM_SESSION0.sid":                      48,
	"FWPM_SESSION0.username":                 56,
	"FWPM_SESSION0.kernelMode":               64,
	"FWPM_PROVIDER0":                         64,
	"FWPM_PROVIDER0.flags":                   32,
	"FWPM_PROVIDER0.providerData":            40,
	"FWPM_PROVIDER0.serviceName":             56,
	"FWPM_SUBLAYER0":                         72,
	"FWPM_SUBLAYER0.flags":                   32,
	"FWPM_SUBLAYER0.providerKey":             40,
	"FWPM_SUBLAYER0.providerData":            48,
	"FWPM_SUBLAYER0.weight":                  64,
	"FWPM_ACTION0":                           20,
	"GUID":                                   16,
	"FWP_V4_ADDR_AND_MASK":                   8,
	"FWPM_FILTER_CONDITION0.fieldKey":        0,
	"FWPM_FILTER0.action.filterType":         132,
	"FWPM_SUBLAYER0.displayData.description": 24,
}

// wfpActualLayout is what the Go structs have, keyed like wfpABILayout.
func wfpActualLayout() map[string]uintptr {
	var (
		v  fwpValue0
		c  fwpmFilterCondition0
		f  fwpmFilter0
		s  fwpmSession0
		p  fwpmProvider0
		sl fwpmSublayer0
	)
	return map[string]uintptr{
		"FWP_VALUE0":                             unsafe.Sizeof(v),
		"FWP_VALUE0.value":                       unsafe.Offsetof(v.value),
		"FWP_BYTE_BLOB":                          unsafe.Sizeof(fwpByteBlob{}),
		"FWPM_DISPLAY_DATA0":                     unsafe.Sizeof(fwpmDisplayData0{}),
		"FWP_V6_ADDR_AND_MASK":                   unsafe.Sizeof(fwpV6AddrAndMask{}),
		"FWPM_FILTER_CONDITION0":                 unsafe.Sizeof(c),
		"FWPM_FILTER_CONDITION0.matchType":       unsafe.Offsetof(c.matchType),
		"FWPM_FILTER_CONDITION0.conditionValue":  unsafe.Offsetof(c.conditionValue),
		"FWPM_FILTER0":                           unsafe.Sizeof(f),
		"FWPM_FILTER0.displayData":               unsafe.Offsetof(f.displayData),
		"FWPM_FILTER0.flags":                     unsafe.Offsetof(f.flags),
		"FWPM_FILTER0.providerKey":               unsafe.Offsetof(f.providerKey),
		"FWPM_FILTER0.providerData":              unsafe.Offsetof(f.providerData),
		"FWPM_FILTER0.layerKey":                  unsafe.Offsetof(f.layerKey),
		"FWPM_FILTER0.subLayerKey":               unsafe.Offsetof(f.subLayerKey),
		"FWPM_FILTER0.weight":                    unsafe.Offsetof(f.weight),
		"FWPM_FILTER0.numFilterConditions":       unsafe.Offsetof(f.numFilterConditions),
		"FWPM_FILTER0.filterCondition":           unsafe.Offsetof(f.filterCondition),
		"FWPM_FILTER0.action":                    unsafe.Offsetof(f.action),
		"FWPM_FILTER0.providerContextKey":        unsafe.Offsetof(f.providerContextKey),
		"FWPM_FILTER0.reserved":                  unsafe.Offsetof(f.reserved),
		"FWPM_FILTER0.filterId":                  unsafe.Offsetof(f.filterID),
		"FWPM_FILTER0.effectiveWeight":           unsafe.Offsetof(f.effectiveWeight),
		"FWPM_SESSION0":                          unsafe.Sizeof(s),
		"FWPM_SESSION0.flags":                    unsafe.Offsetof(s.flags),
		"FWPM_SESSION0.txnWaitTimeoutInMSec":     unsafe.Offsetof(s.txnWaitTimeoutInMSec),
		"FWPM_SESSION0.processId":                unsafe.Offsetof(s.processID),
		"FWPM_SESSION0.sid":                      unsafe.Offsetof(s.sid),
		"FWPM_SESSION0.username":                 unsafe.Offsetof(s.username),
		"FWPM_SESSION0.kernelMode":               unsafe.Offsetof(s.kernelMode),
		"FWPM_PROVIDER0":                         unsafe.Sizeof(p),
		"FWPM_PROVIDER0.flags":                   unsafe.Offsetof(p.flags),
		"FWPM_PROVIDER0.providerData":            unsafe.Offsetof(p.providerData),
		"FWPM_PROVIDER0.serviceName":             unsafe.Offsetof(p.serviceName),
		"FWPM_SUBLAYER0":                         unsafe.Sizeof(sl),
		"FWPM_SUBLAYER0.flags":                   unsafe.Offsetof(sl.flags),
		"FWPM_SUBLAYER0.providerKey":             unsafe.Offsetof(sl.providerKey),
		"FWPM_SUBLAYER0.providerData":            unsafe.Offsetof(sl.providerData),
		"FWPM_SUBLAYER0.weight":                  unsafe.Offsetof(sl.weight),
		"FWPM_ACTION0":                           unsafe.Sizeof(fwpmAction0{}),
		"GUID":                                   unsafe.Sizeof(wfpGUID{}),
		"FWP_V4_ADDR_AND_MASK":                   unsafe.Sizeof(fwpV4AddrAndMask{}),
		"FWPM_FILTER_CONDITION0.fieldKey":        unsafe.Offsetof(c.fieldKey),
		"FWPM_FILTER0.action.filterType":         unsafe.Offsetof(f.action) + unsafe.Offsetof(f.action.filterType),
		"FWPM_SUBLAYER0.displayData.description": unsafe.Offsetof(sl.displayData) + unsafe.Offsetof(sl.displayData.description),
	}
}

// wfpEncoded is a filter in C layout together with everything its
// pointers point to, kept reachable until FwpmFilterAdd0 returns.
type wfpEncoded struct {
	raw   fwpmFilter0
	conds []fwpmFilterCondition0
	keep  []any
}

// wfpEncode lays out f as FWPM_FILTER0 with key wfpFilterKey(index).
// utf16 converts the display name (windows.UTF16PtrFromString on Windows).
func wfpEncode(f wfpFilter, index int, utf16 func(string) (*uint16, error)) (*wfpEncoded, error) {
	e := &wfpEncoded{}
	name, err := utf16(f.name)
	if err != nil {
		return nil, fmt.Errorf("filter name %q: %w", f.name, err)
	}
	provider := wfpProviderKey
	e.keep = append(e.keep, name, &provider)
	e.raw = fwpmFilter0{
		filterKey:   wfpFilterKey(index),
		displayData: fwpmDisplayData0{name: name},
		flags:       fwpmFlagPersist,
		providerKey: &provider,
		layerKey:    wfpLayerKeys[f.layer],
		subLayerKey: wfpSublayerKey,
		weight:      fwpValue0{typ: fwpUint8, value: uintptr(f.weight)},
		action:      fwpmAction0{typ: fwpActionBlock},
	}
	if f.permit {
		e.raw.action.typ = fwpActionPermit
	}
	for _, c := range f.conds {
		rc := fwpmFilterCondition0{matchType: fwpMatchEqual}
		switch c.field {
		case wfpRemoteAddr:
			rc.fieldKey = wfpCondRemoteAddress
			a := c.prefix.Addr()
			switch {
			case a.Is4() && c.prefix.IsSingleIP():
				rc.conditionValue = fwpValue0{typ: fwpUint32, value: uintptr(binary.BigEndian.Uint32(a.AsSlice()))}
			case a.Is4():
				m := &fwpV4AddrAndMask{addr: binary.BigEndian.Uint32(a.AsSlice()), mask: ^uint32(0) << (32 - c.prefix.Bits())}
				e.keep = append(e.keep, m)
				rc.conditionValue = fwpValue0{typ: fwpV4AddrMask, value: uintptr(unsafe.Pointer(m))}
			case c.prefix.IsSingleIP():
				b := a.As16()
				e.keep = append(e.keep, &b)
				rc.conditionValue = fwpValue0{typ: fwpByteArray16, value: uintptr(unsafe.Pointer(&b))}
			default:
				m := &fwpV6AddrAndMask{addr: a.As16(), prefixLength: uint8(c.prefix.Bits())}
				e.keep = append(e.keep, m)
				rc.conditionValue = fwpValue0{typ: fwpV6AddrMask, value: uintptr(unsafe.Pointer(m))}
			}
		case wfpRemotePort:
			rc.fieldKey = wfpCondRemotePort
			rc.conditionValue = fwpValue0{typ: fwpUint16, value: uintptr(c.value)}
		case wfpLocalPort, wfpICMPType:
			rc.fieldKey = wfpCondLocalPort
			rc.conditionValue = fwpValue0{typ: fwpUint16, value: uintptr(c.value)}
		case wfpProtocol:
			rc.fieldKey = wfpCondProtocol
			rc.conditionValue = fwpValue0{typ: fwpUint8, value: uintptr(c.value)}
		case wfpLocalInterface:
			luid := c.value
			e.keep = append(e.keep, &luid)
			rc.fieldKey = wfpCondLocalInterface
			rc.conditionValue = fwpValue0{typ: fwpUint64, value: uintptr(unsafe.Pointer(&luid))}
		case wfpLoopback:
			rc.fieldKey = wfpCondFlags
			rc.matchType = fwpMatchFlagsAll
			rc.conditionValue = fwpValue0{typ: fwpUint32, value: fwpFlagLoopback}
		default:
			return nil, fmt.Errorf("filter %q: condition field %d has no encoding", f.name, c.field)
		}
		e.conds = append(e.conds, rc)
	}
	if len(e.conds) > 0 {
		e.raw.numFilterConditions = uint32(len(e.conds))
		e.raw.filterCondition = &e.conds[0]
	}
	return e, nil
}
