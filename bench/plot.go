package bench

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// nines maps a cumulative fraction to -log10(1-f), so 90%, 99% and 99.9%
// are evenly spaced and the tail is visible. count bounds the last point
// (f = 1) to half a sample beyond the largest one.
func nines(f float64, count uint64) float64 {
	floor := 0.5 / float64(max(count, 1))
	return -math.Log10(max(1-f, floor))
}

// PlotCDF draws the latency distributions of a scenario (one line per
// server, in the order given) as an SVG (or PNG/PDF by the path's
// extension), latency on a log axis and percentiles on a "nines" axis.
func PlotCDF(path, title string, names []string, hists []*Hist) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency per message (µs, log scale)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	colors := []color.Color{color.RGBA{R: 120, G: 120, B: 120, A: 255}, color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255}}
	maxY := 0.0
	for i, h := range hists {
		if h == nil || h.Count == 0 {
			continue
		}
		pts := h.CDF()
		xys := make(plotter.XYs, 0, len(pts))
		for _, pt := range pts {
			x := max(float64(pt.Value)/1e3, 0.1) // log axis: no zero
			y := nines(pt.Fraction, h.Count)
			xys = append(xys, plotter.XY{X: x, Y: y})
			maxY = max(maxY, y)
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = colors[i%len(colors)]
		l.Width = vg.Points(1.5)
		if i == 0 {
			// The baseline is dashed so the two stay apart in grey print.
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (n=%d)", names[i], h.Count), l)
	}
	if maxY == 0 {
		// Nothing to draw: give the log axis a valid range anyway.
		p.X.Min, p.X.Max = 1, 10
	}
	var ticks []plot.Tick
	for _, t := range []struct {
		f     float64
		label string
	}{{0, "0%"}, {0.5, "50%"}, {0.9, "90%"}, {0.99, "99%"}, {0.999, "99.9%"}, {0.9999, "99.99%"}, {0.99999, "99.999%"}} {
		y := -math.Log10(1 - t.f)
		if y <= maxY+0.01 || t.f <= 0.99 {
			ticks = append(ticks, plot.Tick{Value: y, Label: t.label})
		}
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min = 0
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Legend.Padding = vg.Points(4)
	p.Legend.ThumbnailWidth = vg.Points(20)
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
