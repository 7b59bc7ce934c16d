package apiclient

// DefaultSocket is the helper's unix socket.
func DefaultSocket() string { return "/var/run/mirage/helper.sock" }
