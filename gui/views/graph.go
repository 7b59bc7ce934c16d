package views

import (
	"image/color"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/mirage-vpn/mirage/gui/viewmodel"
)

// Graph draws the last minute of upload and download rates as two lines.
type Graph struct {
	widget.BaseWidget
	up, down []float64
}

// Colours of the two series.
var (
	upColor   = color.NRGBA{0xe8, 0x9a, 0x18, 0xff}
	downColor = color.NRGBA{0x3b, 0x6f, 0xd8, 0xff}
)

// NewGraph returns an empty graph.
func NewGraph() *Graph {
	g := &Graph{}
	g.ExtendBaseWidget(g)
	return g
}

// SetData replaces the samples (bytes/s, oldest first) and redraws.
func (g *Graph) SetData(up, down []float64) {
	g.up, g.down = up, down
	g.Refresh()
}

// MinSize keeps the graph small but visible.
func (g *Graph) MinSize() fyne.Size { return fyne.NewSize(240, 70) }

// CreateRenderer implements fyne.Widget.
func (g *Graph) CreateRenderer() fyne.WidgetRenderer {
	r := &graphRenderer{g: g, bg: canvas.NewRectangle(theme.Color(theme.ColorNameInputBackground))}
	for range viewmodel.Samples - 1 {
		u := canvas.NewLine(upColor)
		u.StrokeWidth = 1.5
		d := canvas.NewLine(downColor)
		d.StrokeWidth = 1.5
		r.upLines = append(r.upLines, u)
		r.downLines = append(r.downLines, d)
	}
	return r
}

type graphRenderer struct {
	g                  *Graph
	bg                 *canvas.Rectangle
	upLines, downLines []*canvas.Line
	size               fyne.Size
}

func (r *graphRenderer) Destroy()           {}
func (r *graphRenderer) MinSize() fyne.Size { return r.g.MinSize() }
func (r *graphRenderer) Layout(s fyne.Size) { r.size = s; r.place() }
func (r *graphRenderer) Refresh()           { r.place(); canvas.Refresh(r.g) }
func (r *graphRenderer) Objects() []fyne.CanvasObject {
	objs := []fyne.CanvasObject{r.bg}
	for _, l := range r.upLines {
		objs = append(objs, l)
	}
	for _, l := range r.downLines {
		objs = append(objs, l)
	}
	return objs
}

// place positions the segments: x spans the full minute, y is scaled to the
// largest sample of either series.
func (r *graphRenderer) place() {
	s := r.size
	r.bg.Resize(s)
	peak := 1.0
	for _, v := range append(append([]float64(nil), r.g.up...), r.g.down...) {
		peak = max(peak, v)
	}
	series := func(vals []float64, lines []*canvas.Line) {
		step := s.Width / float32(viewmodel.Samples-1)
		// Right-align: the newest sample is at the right edge.
		off := viewmodel.Samples - len(vals)
		for i, l := range lines {
			if i+1 >= len(vals) {
				l.Hide()
				continue
			}
			y := func(v float64) float32 { return s.Height - 2 - float32(v/peak)*(s.Height-4) }
			l.Position1 = fyne.NewPos(float32(off+i)*step, y(vals[i]))
			l.Position2 = fyne.NewPos(float32(off+i+1)*step, y(vals[i+1]))
			l.Show()
			l.Refresh()
		}
	}
	series(r.g.up, r.upLines)
	series(r.g.down, r.downLines)
}
