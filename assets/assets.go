// Package assets embeds the desktop app's icons (drawn by gen_icons.go).
package assets

import _ "embed"

// Icons, 64x64 PNG: the app icon and one tray icon per connection tone.
var (
	//go:embed icons/app.png
	AppIcon []byte
	//go:embed icons/idle.png
	IdleIcon []byte
	//go:embed icons/busy.png
	BusyIcon []byte
	//go:embed icons/ok.png
	OKIcon []byte
	//go:embed icons/error.png
	ErrorIcon []byte
)
