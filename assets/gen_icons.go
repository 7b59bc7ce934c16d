//go:build ignore

// gen_icons draws the tray and app icons: a coloured shield per connection
// tone on a transparent background, 64x64. Run once with
// `go run assets/gen_icons.go` from the repository root; the PNGs are committed.
package main

import (
	"image"
	"image/color"
	"image/png"
	"log"
	"math"
	"os"
	"path/filepath"
)

const size = 64
const ss = 4 // supersampling per axis

var icons = map[string]color.NRGBA{
	"app.png":   {0x3b, 0x6f, 0xd8, 0xff},
	"idle.png":  {0x8a, 0x8f, 0x98, 0xff},
	"busy.png":  {0xe8, 0x9a, 0x18, 0xff},
	"ok.png":    {0x2e, 0xa4, 0x4f, 0xff},
	"error.png": {0xd7, 0x3a, 0x49, 0xff},
}

// inShield reports whether (x, y) in [0,1]² lies inside the shield outline:
// a flat top with rounded corners, straight sides, and a pointed bottom.
func inShield(x, y float64) bool {
	const l, r, top, mid, bottom = 0.14, 0.86, 0.08, 0.52, 0.94
	if y < top || y > bottom {
		return false
	}
	if y <= mid {
		return x >= l && x <= r
	}
	// Lower half: sides curve in to the point at (0.5, bottom).
	t := (y - mid) / (bottom - mid)
	half := (r - l) / 2 * math.Sqrt(1-t*t)
	return math.Abs(x-0.5) <= half
}

// inMark is the white keyhole inside the shield.
func inMark(x, y float64) bool {
	dx, dy := x-0.5, y-0.42
	if dx*dx+dy*dy <= 0.09*0.09 {
		return true
	}
	return y >= 0.42 && y <= 0.70 && math.Abs(dx) <= 0.045+0.04*(y-0.42)/0.28
}

func main() {
	for name, c := range icons {
		img := image.NewNRGBA(image.Rect(0, 0, size, size))
		for py := range size {
			for px := range size {
				var shield, mark int
				for sy := range ss {
					for sx := range ss {
						x := (float64(px) + (float64(sx)+0.5)/ss) / size
						y := (float64(py) + (float64(sy)+0.5)/ss) / size
						if inShield(x, y) {
							shield++
							if inMark(x, y) {
								mark++
							}
						}
					}
				}
				if shield == 0 {
					continue
				}
				n := float64(ss * ss)
				w := float64(mark) / float64(shield)
				mix := func(a uint8) uint8 { return uint8(math.Round(float64(a)*(1-w) + 255*w)) }
				img.SetNRGBA(px, py, color.NRGBA{mix(c.R), mix(c.G), mix(c.B), uint8(math.Round(255 * float64(shield) / n))})
			}
		}
		f, err := os.Create(filepath.Join("assets", "icons", name))
		if err != nil {
			log.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			log.Fatal(err)
		}
		if err := f.Close(); err != nil {
			log.Fatal(err)
		}
	}
}
