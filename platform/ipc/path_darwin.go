package ipc

// DefaultPath is where the helper listens (core/apiclient.DefaultSocket).
const DefaultPath = "/var/run/mirage/helper.sock"
