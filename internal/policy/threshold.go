package policy

// evalThreshold is the seed notebook's rule on the panic window. The seed checked its
// metrics at every step, as they were at that moment; the 6 s panic window is the closest
// reading that is not a single noisy sample, while the 60 s stable window would delay
// every step by up to a minute on top of the 300 s cooldown.
//
// Up by one if any of queue, mean response time or GPU utilization is above its up
// threshold; down by one only if all are below their down thresholds; any change starts a
// cooldown during which the rule may recommend but nothing changes (clamp "cooldown").
func (a *Autoscaler) evalThreshold(in *Input, cur int) (raw, want int) {
	t := &a.cfg.threshold
	p := &in.Panic
	if p.Ready == 0 || in.Ready == 0 {
		// Nothing measured is not "all below the down thresholds".
		a.cause.code = causeNoReady
		return cur, cur
	}
	queue, response, gpu := p.Waiting, p.E2EMean, p.GPUUtil
	var up uint8
	if queue > t.queueUp {
		up |= 1
	}
	if response > t.responseUpS {
		up |= 2
	}
	if gpu > t.gpuUp {
		up |= 4
	}
	down := queue < t.queueDown && response < t.responseDownS && gpu < t.gpuDown
	a.cause = cause{a: queue, b: response, c: gpu, flags: up}
	raw = cur
	switch {
	case up != 0:
		a.cause.code = causeThUp
		raw = cur + 1
	case down && cur > in.Min:
		a.cause.code = causeThDown
		raw = cur - 1
	default:
		a.cause.code = causeThWithin
	}
	want = raw
	if raw != cur && a.scaled {
		if since := in.Now.Sub(a.lastScale); since < t.cooldown {
			a.addClamp(ClampCooldown, raw, cur, clampCooldown, (t.cooldown - since).Seconds(), t.cooldown.Seconds())
			want = cur
		}
	}
	return raw, want
}
