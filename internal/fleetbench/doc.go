// Package fleetbench is `llmscaler bench fleet`: it measures one real controller process
// against thousands of simulated agents that run in a second OS process, each with its own
// gRPC connection and AgentService/Connect stream, as real hosts would have.
//
// The parent (Bench) starts the controller (or, with failover, an etcd and two controllers),
// applies deployments sized so that the controller is content with what the agents run,
// starts the agents process (Agents, the hidden `llmscaler bench agents`) and drives it with
// JSON lines on its stdin; the agents process answers with events and stats on its stdout.
// The parent then measures the connect, a steady window (reports/s, ingest latency, CPU and
// RSS of both processes), admin calls at that size, decision latency through probe
// deployments and, with failover, a kill -9 of the leader.
//
// The pure parts (the layout of instances, the simulated agent's desired-state handling,
// quantiles, Prometheus text and /proc parsing, the result table) have no I/O and are unit
// tested; the files that talk to processes, sockets and /proc are thin around them.
//
// AgentBench is `llmscaler bench agent`, on the same process plumbing: one real controller,
// one real agent with fake GPUs whose catalog runs `llmscaler fakeserver`, a deployment that
// holds its instances READY, and a steady window over which it measures the agent process
// alone (CPU from /proc/PID/stat, RSS and VmHWM from /proc/PID/status), its reports/s, and,
// apart, what its servers cost. The servers outlive the agent by design, so it kills them
// itself at the end, found by pid and by their command line.
package fleetbench
