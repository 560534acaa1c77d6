// Package sim is a discrete-event simulator of an autoscaled LLM deployment. It replays a
// workload (a request trace, a rate series or the seed pattern) against replicas whose timing
// is servermodel's, on a simulated clock: no goroutines, no wall clock, and the same seed gives
// the same result.
//
// Every report interval (1 s) each live replica's engine is turned into a window.Sample, the
// deployment's window.Deployment ticks, and a Scaler decides the replica count, exactly as the
// controller feeds the same window and policy code from real agents. Replicas whose start was
// decided but which are still cold-starting count as starting; drained replicas leave the
// windows at once, as a stopping instance does in the controller.
//
// Modelling choices, each the simplest that keeps the policies honest:
//   - A request goes to the least-loaded READY replica (fewest waiting+running, lowest id on a
//     tie). With no READY replica it waits in a front queue and is dispatched when one is ready.
//   - A replica is STARTING for Params.ColdStart after its start was decided, then READY.
//     Scaling down stops STARTING replicas first (they hold no requests), then drains the least
//     loaded READY ones: they take no new requests and stop when their engine is empty.
//   - GPU-hours run from the start decision to the stop, cold start and draining included.
//   - An engine's events are accounted when its iteration starts, with their true end times;
//     so a report interval may count a first token due a few milliseconds after it closes.
//   - GPU utilization of a replica is the share of the report interval its engine spent in
//     iterations, in percent: time-averaged, so a replica that idles half the interval reads
//     50, where "100 if anything is running" would read 100.
//   - The deployment starts with Config.InitialReplicas READY (warm) at time zero; the command
//     gives every policy WarmReplicas, what the first minute's load needs, so that no policy
//     is judged on a backlog it inherited from a cold fleet.
package sim
