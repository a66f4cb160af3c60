package lab

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Save renders f as SVG to path.
func (f Figure) Save(path string) error {
	b, err := f.SVG()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// SVG renders f as SVG. Points that cannot be drawn (NaN, or non-positive on a log
// axis) are left out of their line.
func (f Figure) SVG() ([]byte, error) { return f.render("svg") }

// render draws f in a format gonum/plot supports ("svg", "png", ...).
func (f Figure) render(format string) ([]byte, error) {
	p := plot.New()
	p.Title.Text = f.Title
	p.X.Label.Text = f.XLabel
	p.Y.Label.Text = f.YLabel
	p.Legend.Top = !strings.HasPrefix(f.Legend, "bottom")
	p.Legend.Left = strings.HasSuffix(f.Legend, "left")
	if f.YRange[0] != f.YRange[1] {
		p.Y.Min, p.Y.Max = f.YRange[0], f.YRange[1]
	}
	if f.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	if f.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	for i, s := range f.Series {
		var pts plotter.XYs
		for j := range s.X {
			y := s.Y[j]
			x := s.X[j]
			if math.IsNaN(y) || math.IsInf(y, 0) || (f.LogY && y <= 0) || (f.LogX && x <= 0) {
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
		p.Legend.Add(s.Name, l, sc)
	}
	wt, err := p.WriterTo(16*vg.Centimeter, 10*vg.Centimeter, format)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
