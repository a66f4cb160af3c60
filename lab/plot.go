package lab

import (
	"bytes"
	"fmt"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Save renders f as SVG to path.
func (f Figure) Save(path string) error {
	b, err := f.SVG()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// SVG renders f as SVG.
func (f Figure) SVG() ([]byte, error) { return f.render("svg") }

// Figure geometry: the legend gets its own column right of the axes so it
// never hides a line, however many series there are.
const (
	plotWidth   = 15 * vg.Centimeter
	legendWidth = 6 * vg.Centimeter
	plotHeight  = 10 * vg.Centimeter
)

// render draws f in a format gonum/plot supports ("svg", "png", ...).
// Points that cannot be drawn (NaN, or non-positive on a log axis) are left
// out of their line.
func (f Figure) render(format string) ([]byte, error) {
	p := plot.New()
	p.Title.Text = f.Title
	p.X.Label.Text = f.XLabel
	p.Y.Label.Text = f.YLabel
	if f.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	if f.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: 1}
	}
	if f.YRange[0] != f.YRange[1] {
		p.Y.Min, p.Y.Max = f.YRange[0], f.YRange[1]
	}
	p.Add(plotter.NewGrid())
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.TextStyle.Font.Size = vg.Points(10)
	for i, s := range f.Series {
		var pts plotter.XYs
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(y, 0) || (f.LogY && y <= 0) || (f.LogX && x <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: x, Y: y})
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("series %q: %w", s.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		sc.Color = plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		legend.Add(s.Name, l, sc)
	}
	c, err := draw.NewFormattedCanvas(plotWidth+legendWidth, plotHeight, format)
	if err != nil {
		return nil, err
	}
	dc := draw.New(c)
	p.Draw(draw.Crop(dc, 0, -legendWidth, 0, 0))
	legend.Draw(draw.Crop(dc, plotWidth+vg.Points(6), 0, 0, -vg.Points(24)))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
