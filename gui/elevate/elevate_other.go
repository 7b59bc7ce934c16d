//go:build !linux && !darwin && !windows

package elevate

func command(string, []string) ([]string, error) { return nil, ErrUnsupported }
