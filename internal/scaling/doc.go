// Package scaling is the per-deployment scaling loop, the one piece of autoscaling that the
// controller runs in real time and the simulator runs in simulated time.
//
// A Deployment owns one deployment's sliding windows (internal/window), its policy (an
// internal/policy Autoscaler, or in the simulator a baseline from another system) and the
// set of replicas its windows hold. It takes the replicas' latest reports, either the whole
// set at each step (Step, the simulator) or only what changed (Update and Gone, then
// Evaluate, the controller), drops replicas that are gone from the windows, closes a window
// point, builds the policy's
// view (counting replicas whose start was decided but not yet reported as starting, and
// replicas being stopped as gone, so that every pass while replicas come up does not look
// like a new need), evaluates the policy and keeps the count it decided.
//
// A Fleet runs the Deployments of one controller. Its Source gives it the replicas that
// changed since it last asked, so that the work per report is the same at 10 agents as at
// 10,000. It evaluates every deployment each report interval, and a deployment whose
// replicas reported as soon as they did, at most once per gap (a tenth of the report
// interval), reading changes at most a hundred times per interval however many agents
// report. Time comes from a Clock, so the coalescing is tested on a fake clock; decisions
// go one way, to a Sink.
//
// Nothing here does I/O: the controller's engine gives the Fleet the changes and acts on
// the decisions (etcd, reconciler, journal); the simulator calls Deployment.Step at every
// simulated report tick and starts or drains simulated replicas.
package scaling
