//go:build linux || freebsd

package ipc

// DefaultPath is where the helper listens (core/apiclient.DefaultSocket).
const DefaultPath = "/run/mirage/helper.sock"
