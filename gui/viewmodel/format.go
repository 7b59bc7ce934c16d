package viewmodel

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
)

// HelperNotRunning is shown when the helper's local API cannot be reached.
const HelperNotRunning = "The Mirage helper is not running"

// FormatRate renders a rate in bytes per second with decimal units ("1.2 MB/s"),
// the way network speeds are usually quoted.
func FormatRate(bytesPerSec float64) string {
	if bytesPerSec < 0 || math.IsNaN(bytesPerSec) {
		bytesPerSec = 0
	}
	units := []string{"B/s", "kB/s", "MB/s", "GB/s", "TB/s"}
	v := bytesPerSec
	i := 0
	for v >= 999.95 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", v, units[0])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// FormatBytes renders a byte count with binary units ("345.6 MiB").
func FormatBytes(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	i := 0
	for v >= 1023.95 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// FormatUptime renders a duration coarsely: "42 s", "5 min 03 s", "1 h 02 min", "2 d 03 h".
func FormatUptime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return fmt.Sprintf("%d min %02d s", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%d h %02d min", s/3600, (s%3600)/60)
	default:
		return fmt.Sprintf("%d d %02d h", s/86400, (s%86400)/3600)
	}
}

// Humanize turns an error from the helper client into a sentence for the
// user. API errors keep the helper's message (for invalid_config it names
// the key); anything else means the helper could not be reached.
func Humanize(err error) string {
	if err == nil {
		return ""
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return humanizeAPI(ae)
	}
	return HelperNotRunning
}

func humanizeAPI(ae *api.Error) string {
	switch ae.Code {
	case api.CodeRejected:
		if ae.Message != "" {
			return "The server rejected the credentials: " + ae.Message
		}
		return "The server rejected the username or password"
	case api.CodeNetwork:
		return "Cannot reach the server: " + ae.Message
	case api.CodeSystem:
		return "Could not set up the tunnel: " + ae.Message
	case api.CodeForbidden:
		return "The helper refused the request: " + ae.Message
	case api.CodeInternal:
		return "Helper error: " + ae.Message
	default:
		if ae.Message == "" {
			return ae.Code
		}
		return ae.Message
	}
}

// isUnreachable reports whether err is a transport failure rather than an
// answer from the helper.
func isUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var ae *api.Error
	return !errors.As(err, &ae)
}
