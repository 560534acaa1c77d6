// Package window aggregates what a deployment's replicas report into sliding windows: the
// arrival rate, queue, running batch, KV-cache and GPU use, latency percentiles, token and
// request rates, and replica counts by phase, over any span up to the longest configured
// window (a stable window, 60 s by default, and a short panic window, 6 s).
//
// It is pure: no I/O, no goroutines and no wall clock. The caller passes the time in, so
// the controller drives it on wall-clock time and the simulator on a simulated clock, and
// both run the same code.
//
// The caller feeds each replica's latest report with Observe, closes one aggregation point
// per report interval with Tick, and reads a window with Values. Points live in a ring
// buffer with O(1) insert, as running totals, so a window's rates and means are the
// difference of two points; Tick costs O(replicas) and Values O(log points + the span's
// latency components + replicas), with no allocation in steady state.
//
// Every figure knows its age: a replica whose latest sample is older than StaleIntervals
// report intervals is counted as Stale and its data is left out of the aggregates, so an
// agent that stopped reporting never looks like a replica with nothing to do. Values.Covered
// says how much of the span has data.
//
// Latency percentiles are merged across replicas and intervals as count-weighted mixtures
// under a log-space model of each reported (p50, p95) pair; Summary documents the model and
// why a weighted average of percentiles would not do.
package window
