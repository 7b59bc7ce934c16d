//go:build windows

package killswitch

import (
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"
)

// TestWFPWindowsLayout checks the fwpmtypes.h layouts on the real target.
// It has never been run: the project's CI has no Windows machine (the
// same table is also checked on Linux by TestWFPLayout, which holds for
// any 64-bit OS of the same architecture).
func TestWFPWindowsLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("WFP bindings are 64-bit only")
	}
	got := wfpActualLayout()
	for k, want := range wfpABILayout {
		if got[k] != want {
			t.Errorf("%s = %d, want %d", k, got[k], want)
		}
	}
	if unsafe.Sizeof(wfpGUID{}) != unsafe.Sizeof(windows.GUID{}) {
		t.Errorf("GUID size %d, windows.GUID %d", unsafe.Sizeof(wfpGUID{}), unsafe.Sizeof(windows.GUID{}))
	}
}

// TestWFPWindowsEngine opens and closes a session and looks up mirage's
// filter (read-only); it needs an elevated prompt.
func TestWFPWindowsEngine(t *testing.T) {
	e, err := openEngine()
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) || isFwpError(err, uint32(windows.ERROR_ACCESS_DENIED)) {
			t.Skip("needs an elevated prompt:", err)
		}
		t.Fatal(err)
	}
	defer e.close()
	if _, err := wfpActive(e); err != nil {
		t.Fatal(err)
	}
}
