// Package policy decides how many replicas a deployment should have. It is pure: no I/O, no
// goroutines and no clock; Input carries the time and the window figures, so the controller
// and the simulator run the same code.
//
// An Autoscaler holds one deployment's policy and its state. Each tick the caller closes a
// window point, reads the stable and panic windows (Autoscaler.Config says which spans) and
// calls Evaluate, which returns a Decision: the policy's raw recommendation, the clamps that
// changed it, the desired count and a one-line reason. Evaluate assumes a change is acted on
// unless the policy is a dry run. The caller journals decisions whose Recommended differs
// from Current, and changes.
//
// # Policies
//
// threshold, the seed notebook's rule, on the panic window: up by one if the queue > 10,
// the mean response time > 5 s or GPU utilization > 85 %; down by one only if all of queue
// < 2, response < 1 s and GPU < 30 %; nothing changes for 300 s after a change. max_step 1.
//
// target, the Kubernetes HPA's target tracking, on the panic window: desired =
// ceil(ready x metric/target) for a per-replica metric (in flight, waiting, KV cache, GPU
// utilization), no change within a tolerance of 0.1, starting replicas counted at 0 when
// scaling up; the lowest recommendation of the last 0 s when scaling up and the highest of
// the last 300 s when scaling down; at most +max(4, 100 %) and -100 % per 15 s. No max_step.
//
// slo, the default: keep TTFT (or E2E) at p95 (or another percentile) under 2 s with as few
// replicas as possible.
//   - Capacity: each ready replica's requests/s, from prior_requests_per_second [2] until
//     measured. Lowered only by a breach that lasts a few request lifetimes while the estimate
//     says the ready replicas have headroom to spare (a fleet short by the model's own count
//     breaches as expected and says nothing of capacity); the sample is the saturated
//     replicas' output tokens/s over the output tokens of a request (finished requests lag by
//     seconds). Raised to the throughput a replica demonstrably served with the SLO met (its
//     Poisson lower bound, 4 standard deviations below the window's finished count), and only
//     once the ready count has held for a stable window and the drain after it: replicas that
//     left in a scale-down finish requests into the window too. With no prior configured, the
//     default is probed upwards (probeCapacity) up to the bound of a model of the replicas'
//     busy time fitted to their token counts (capmodel.go); while batches are too small for
//     the model's samples (short requests on a fleet the low default spread thin), 10 % a
//     step towards the rate at which Little's law puts the batch at probeBatch.
//   - Sizing on the stable window: ceil(arrival / capacity x (1 + headroom)); up by at most 4
//     per decision. The headroom is learned (headroom.go) once there are 30 minutes of rise
//     history: the 0.98 quantile of how far the demand rose over one cold start from the
//     recent samples at or near the rate being sized, the lower of the two halves of the last
//     hour (a rise counts only if it recurs). Smooth traffic gets the few percent its noise
//     needs, on/off traffic keeps its crest through its troughs, a flash crowd seen once is the
//     panic path's. No trend projection and no spare replica then: the rises contain both.
//     Before that, or when the policy sets headroom: the fixed headroom [0.15], at least one
//     replica spare once the load needs a whole one, and, when the arrival rate has risen
//     beyond 3 standard deviations of Poisson noise between the Long window (two stable
//     windows) and the stable one, for 10 s, with the panic window not below the stable mean,
//     sizing for where that trend is one cold start ahead (at most 1.5 x the stable rate).
//   - Panic: when the panic window shows p95 over target (and the stable window does too, if
//     there is no queue: a few long prompts are not a capacity problem), a backlog of at least
//     half a request per ready replica that cannot drain within the target, or arrivals above
//     ready capacity by more than Poisson noise explains, scale up at once to serve the panic
//     arrival rate with headroom and drain the backlog, up to panic_max_step [10] replicas per
//     decision. The backlog sits in the engines that hold it, so its drain plans at most as
//     many replicas as are ready: a new replica takes new arrivals, not the queue.
//   - Starting replicas are capacity arriving at StartingSince + ColdStart: the backlog is
//     projected to when a replica started now would be ready, with each starting one
//     draining it from its expected ready time, so the policy adds once and waits instead of
//     adding again while the first ones load; with slow cold starts the drain is planned over
//     one cold start rather than the target, so it does not overshoot.
//   - Scale down only after the stable window has shown spare capacity (the demand fits in
//     fewer replicas, with headroom or the spare replica, and a 5 % margin) for a panic
//     window, and never below the most the sizing asked for over the scale-down delay
//     [120 s, stretched while scale-downs are regretted: a panic back above the count left
//     while the latency is over target, or with arrivals above what that count carries
//     once a replica started for the panic is ready]; a panic records its arrival rate's
//     need, not the backlog's, so replicas started to drain a queue go once it is gone. Each
//     step a panic window after the last change, with no replica starting and, as for every
//     policy, fresh data from every replica. Before the policy has a delay of history (a new
//     leader), the first step waits out the delay. A panic-window risk that the capacity on
//     hand covers holds that tick but does not restart the delay.
//
// # Common clamps
//
// In order: the policy's own (cooldown, stabilization, rate_limit, panic max_step), max_step,
// stale_data (no scale-down while a replica is stale, a live replica never reported, or the
// windows lack recent points: missing data never causes a scale-down), bounds (min and max
// replicas, after stale_data so lowering max_replicas still applies), dry_run (the decision
// is made and journaled, Desired stays Current). Paused decides a hold with clamp paused.
package policy
