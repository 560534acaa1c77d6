package sim

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Burstiness says how bunched a workload's arrivals are. Poisson arrivals at a steady rate
// read 1 for Dispersion, WindowDispersion and GapCV; a renewal process whose gaps have a
// coefficient of variation c reads about c squared for the dispersions over bins much longer
// than a gap.
type Burstiness struct {
	// Bin is the width of the bins arrivals are counted in.
	Bin time.Duration
	// Bins is the number of whole bins from time zero to the last arrival; a last, partial
	// bin is left out.
	Bins int
	// MeanPerBin is the mean number of arrivals a bin.
	MeanPerBin float64
	// Dispersion is the index of dispersion of the arrivals per bin: their variance over
	// their mean. The rate's own changes (a diurnal cycle) raise it too.
	Dispersion float64
	// WindowDispersion is the variance of the arrivals per bin about the mean of their own
	// DispersionWindow, over the mean: the dispersion with the rate's changes from window to
	// window taken out, so Poisson arrivals at rates that change only between windows read
	// about 1 whatever the changes. 0 when a window holds fewer than two bins.
	WindowDispersion float64
	// PeakToMean is the most arrivals in a bin over MeanPerBin.
	PeakToMean float64
	// GapCV is the coefficient of variation (standard deviation over mean) of the gaps
	// between consecutive arrivals, all of them; 0 with fewer than three arrivals.
	GapCV float64
}

// DispersionWindow is the window Burstiness.WindowDispersion measures about: the ServeGen
// traces' window, within which their rate is one number.
const DispersionWindow = 10 * time.Minute

// maxBurstinessBins bounds the counts MeasureBurstiness keeps (a gigabyte of them).
const maxBurstinessBins = 1 << 27

// MeasureBurstiness counts w's arrivals in bins of width bin from time zero and measures how
// bunched they are. A workload shorter than one bin is an error.
func MeasureBurstiness(w *Workload, bin time.Duration) (Burstiness, error) {
	if bin <= 0 {
		return Burstiness{}, fmt.Errorf("bin %v: want a positive duration", bin)
	}
	if len(w.Requests) == 0 {
		return Burstiness{}, errors.New("the workload has no requests")
	}
	nb := w.Duration() / bin
	switch {
	case nb < 1:
		return Burstiness{}, fmt.Errorf("the workload lasts %v, less than one %v bin", w.Duration(), bin)
	case nb > maxBurstinessBins:
		return Burstiness{}, fmt.Errorf("%v bins of %v: more than %d; use wider bins", int64(nb), bin, maxBurstinessBins)
	}
	b := Burstiness{Bin: bin, Bins: int(nb)}
	counts := make([]int32, b.Bins)
	for _, r := range w.Requests {
		if i := r.At / bin; r.At >= 0 && i < nb {
			counts[i]++
		}
	}
	var sum, peak float64
	for _, c := range counts {
		sum += float64(c)
		peak = max(peak, float64(c))
	}
	b.MeanPerBin = sum / float64(b.Bins)
	if b.MeanPerBin > 0 {
		var ss float64
		for _, c := range counts {
			d := float64(c) - b.MeanPerBin
			ss += d * d
		}
		b.Dispersion = ss / float64(b.Bins) / b.MeanPerBin
		b.PeakToMean = peak / b.MeanPerBin
		if per := int(DispersionWindow / bin); per >= 2 {
			var ss float64
			dof := 0
			for lo := 0; lo < len(counts); lo += per {
				win := counts[lo:min(lo+per, len(counts))]
				if len(win) < 2 {
					continue
				}
				var s float64
				for _, c := range win {
					s += float64(c)
				}
				m := s / float64(len(win))
				for _, c := range win {
					d := float64(c) - m
					ss += d * d
				}
				dof += len(win) - 1
			}
			if dof > 0 {
				b.WindowDispersion = ss / float64(dof) / b.MeanPerBin
			}
		}
	}
	if n := len(w.Requests); n >= 3 {
		// Welford's running mean and variance: the gaps of a day are a few million.
		var mean, m2 float64
		for i := 1; i < n; i++ {
			g := float64(w.Requests[i].At - w.Requests[i-1].At)
			d := g - mean
			mean += d / float64(i)
			m2 += d * (g - mean)
		}
		if mean > 0 {
			b.GapCV = math.Sqrt(m2/float64(n-1)) / mean
		}
	}
	return b, nil
}
