package killswitch

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/windows"
)

// fwpuclnt.dll, the WFP management API.
var (
	modFwpuclnt                  = windows.NewLazySystemDLL("fwpuclnt.dll")
	procFwpmEngineOpen0          = modFwpuclnt.NewProc("FwpmEngineOpen0")
	procFwpmEngineClose0         = modFwpuclnt.NewProc("FwpmEngineClose0")
	procFwpmTransactionBegin0    = modFwpuclnt.NewProc("FwpmTransactionBegin0")
	procFwpmTransactionCommit0   = modFwpuclnt.NewProc("FwpmTransactionCommit0")
	procFwpmTransactionAbort0    = modFwpuclnt.NewProc("FwpmTransactionAbort0")
	procFwpmProviderAdd0         = modFwpuclnt.NewProc("FwpmProviderAdd0")
	procFwpmProviderDeleteByKey0 = modFwpuclnt.NewProc("FwpmProviderDeleteByKey0")
	procFwpmSubLayerAdd0         = modFwpuclnt.NewProc("FwpmSubLayerAdd0")
	procFwpmSubLayerDeleteByKey0 = modFwpuclnt.NewProc("FwpmSubLayerDeleteByKey0")
	procFwpmFilterAdd0           = modFwpuclnt.NewProc("FwpmFilterAdd0")
	procFwpmFilterDeleteByKey0   = modFwpuclnt.NewProc("FwpmFilterDeleteByKey0")
	procFwpmFilterGetByKey0      = modFwpuclnt.NewProc("FwpmFilterGetByKey0")
	procFwpmFreeMemory0          = modFwpuclnt.NewProc("FwpmFreeMemory0")
)

// WFP error codes (fwpmu.h / winerror.h).
const (
	fwpErrFilterNotFound   = 0x80320003
	fwpErrProviderNotFound = 0x80320005
	fwpErrSublayerNotFound = 0x80320007
	fwpErrNotFound         = 0x80320008
	fwpErrAlreadyExists    = 0x80320009
)

// fwpError is a non-zero DWORD returned by an Fwpm function.
type fwpError uint32

func (e fwpError) Error() string {
	return fmt.Sprintf("%s (%#x)", windows.Errno(e).Error(), uint32(e))
}

// fwpCall calls p and turns its DWORD result into an error.
func fwpCall(p *windows.LazyProc, args ...uintptr) error {
	if err := p.Find(); err != nil {
		return fmt.Errorf("fwpuclnt.dll: %w", err)
	}
	r, _, _ := p.Call(args...)
	if uint32(r) != 0 {
		return fmt.Errorf("%s: %w", p.Name, fwpError(uint32(r)))
	}
	return nil
}

func isFwpError(err error, codes ...uint32) bool {
	var fe fwpError
	if !errors.As(err, &fe) {
		return false
	}
	for _, c := range codes {
		if uint32(fe) == c {
			return true
		}
	}
	return false
}

// winEngine is the real wfpEngine: a non-dynamic session, so the objects
// it adds (all flagged persistent) outlive the process and a reboot.
type winEngine struct {
	h uintptr
}

// openEngine opens the local filter engine. Only 64-bit builds have the
// structure layouts in wfp_abi.go.
func openEngine() (*winEngine, error) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		return nil, fmt.Errorf("killswitch: WFP needs a 64-bit build (this is %s): %w", runtime.GOARCH, errors.ErrUnsupported)
	}
	name, err := windows.UTF16PtrFromString("Mirage VPN kill switch")
	if err != nil {
		return nil, err
	}
	session := fwpmSession0{displayData: fwpmDisplayData0{name: name}, txnWaitTimeoutInMSec: wfpTxnWaitTimeout}
	var h uintptr
	err = fwpCall(procFwpmEngineOpen0, 0, rpcCAuthnWinNT, 0, uintptr(unsafe.Pointer(&session)), uintptr(unsafe.Pointer(&h)))
	runtime.KeepAlive(name)
	if err != nil {
		return nil, fmt.Errorf("killswitch: open WFP engine: %w", err)
	}
	return &winEngine{h: h}, nil
}

func (e *winEngine) close() error { return fwpCall(procFwpmEngineClose0, e.h) }

func (e *winEngine) begin() error  { return fwpCall(procFwpmTransactionBegin0, e.h, 0) }
func (e *winEngine) commit() error { return fwpCall(procFwpmTransactionCommit0, e.h) }
func (e *winEngine) abort() error  { return fwpCall(procFwpmTransactionAbort0, e.h) }

func (e *winEngine) addProvider() error {
	name, err := windows.UTF16PtrFromString(wfpProviderName)
	if err != nil {
		return err
	}
	p := fwpmProvider0{providerKey: wfpProviderKey, displayData: fwpmDisplayData0{name: name}, flags: fwpmFlagPersist}
	err = fwpCall(procFwpmProviderAdd0, e.h, uintptr(unsafe.Pointer(&p)), 0)
	runtime.KeepAlive(name)
	if isFwpError(err, fwpErrAlreadyExists) {
		return nil
	}
	return err
}

func (e *winEngine) addSublayer() error {
	name, err := windows.UTF16PtrFromString(wfpSublayerName)
	if err != nil {
		return err
	}
	provider := wfpProviderKey
	s := fwpmSublayer0{
		subLayerKey: wfpSublayerKey,
		displayData: fwpmDisplayData0{name: name},
		flags:       fwpmFlagPersist,
		providerKey: &provider,
		weight:      wfpSublayerWeight,
	}
	err = fwpCall(procFwpmSubLayerAdd0, e.h, uintptr(unsafe.Pointer(&s)), 0)
	runtime.KeepAlive(name)
	runtime.KeepAlive(&provider)
	if isFwpError(err, fwpErrAlreadyExists) {
		return nil
	}
	return err
}

func (e *winEngine) addFilter(index int, f wfpFilter) error {
	enc, err := wfpEncode(f, index, windows.UTF16PtrFromString)
	if err != nil {
		return err
	}
	var id uint64
	err = fwpCall(procFwpmFilterAdd0, e.h, uintptr(unsafe.Pointer(&enc.raw)), 0, uintptr(unsafe.Pointer(&id)))
	runtime.KeepAlive(enc)
	return err
}

func (e *winEngine) deleteFilter(index int) (bool, error) {
	key := wfpFilterKey(index)
	err := fwpCall(procFwpmFilterDeleteByKey0, e.h, uintptr(unsafe.Pointer(&key)))
	if isFwpError(err, fwpErrFilterNotFound, fwpErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (e *winEngine) deleteSublayer() error {
	key := wfpSublayerKey
	err := fwpCall(procFwpmSubLayerDeleteByKey0, e.h, uintptr(unsafe.Pointer(&key)))
	if isFwpError(err, fwpErrSublayerNotFound, fwpErrNotFound) {
		return nil
	}
	return err
}

func (e *winEngine) deleteProvider() error {
	key := wfpProviderKey
	err := fwpCall(procFwpmProviderDeleteByKey0, e.h, uintptr(unsafe.Pointer(&key)))
	if isFwpError(err, fwpErrProviderNotFound, fwpErrNotFound) {
		return nil
	}
	return err
}

func (e *winEngine) filterExists(index int) (bool, error) {
	key := wfpFilterKey(index)
	var out unsafe.Pointer
	err := fwpCall(procFwpmFilterGetByKey0, e.h, uintptr(unsafe.Pointer(&key)), uintptr(unsafe.Pointer(&out)))
	if isFwpError(err, fwpErrFilterNotFound, fwpErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if out != nil {
		procFwpmFreeMemory0.Call(uintptr(unsafe.Pointer(&out)))
	}
	return true, nil
}
