// Package supervisor starts, watches, drains and stops the model-server processes of one
// agent, built from the profiles of the agent's local catalog, and carries them over an agent
// restart.
//
// # Processes
//
// Each instance is one OS process in its own process group, so that a stop reaches the
// workers a server forks and a Ctrl-C to the agent's terminal does not reach the servers.
// Its stdout and stderr go straight to <DataDir>/logs/<instance_id>.log, opened with
// O_APPEND: no pipe joins a server to the agent, so a server outlives an agent that dies and
// is never killed by SIGPIPE. When a log passes Config.LogMaxBytes it is copied to
// <instance_id>.log.1 and truncated; the server's O_APPEND writes carry on at the start. The
// logs of an instance the supervisor has forgotten are deleted once LogRetention (24 h) has
// passed since they were last written.
//
// # Life of an instance
//
// An instance is STARTING until its health path answers 2xx, then READY. One that does not
// become healthy within the profile's startup_timeout is stopped and ends FAILED. One that
// exits when nobody stopped it is restarted after a backoff (1 s, doubling, capped at 60 s,
// on the watch loop's clock) up to the profile's max_restarts times, then FAILED with its
// exit code and the last lines of its log. While it waits for a restart it is STARTING with
// no process, and keeps its GPUs. A READY instance's health path is checked every
// Config.HealthInterval; one that fails Config.UnhealthyChecks checks in a row while its
// metrics show no progress (a deadlocked engine, a wedged GPU: the process lives on but
// serves nothing) is taken for hung, its process group is killed, and it is restarted the
// same way, with "hung" in its message.
//
// # Busy is not hung
//
// A server can be too busy to answer its health path in time and still be working: llama.cpp's
// llama-server stops answering /health within the deadline while it works through a long
// queue. Killing it then throws away its whole queue, and in a surge every busy replica with
// it. So a failed health check counts towards UnhealthyChecks only when the scrapes since the
// previous check show no progress either. Progress is any cumulative figure the scraper reads
// growing between two scrapes of the same process (prompt tokens, generated tokens, finished
// requests, latency observations) or the running batch changing size or the queue shrinking.
// A failed check with progress ends the run of failures; the instance stays READY with the
// message "health check failing but making progress", and the agent logs "busy, not hung"
// at Warn once per run of failed checks, until the health path answers again. Scrapes are not
// gated by health checks: a READY instance is scraped on every tick, whatever its health.
//
// Where there is no progress signal, the health check alone decides, as before: no
// Config.Metrics, scrapes that fail (a frozen process answers neither), the first scrape of a
// process (there is nothing to compare it with), or an engine whose metrics export no
// counters and whose gauges do not move.
//
// Stop makes an instance DRAINING (no longer routable), waits until a scrape taken after the
// drain began shows no running or waiting requests, or until the drain timeout passes, then
// sends the profile's stop_signal to the process group and SIGKILL after stop_grace. It is
// STOPPED once the whole group is gone. An instance stopped while STARTING, or on an agent
// without a MetricsSource, is not drained.
//
// STOPPED instances are reported for StoppedRetention after they end and FAILED ones for
// FailedRetention, unless they are stopped first, then forgotten.
//
// # Agent restarts
//
// Every change is written to <DataDir>/instances.json (temp file, fsync, rename). New reads
// it and re-adopts each live instance whose process still runs: the pid must exist and its
// start time (field 22 of /proc/<pid>/stat) must be the one recorded, so that a reused pid is
// never taken for a server. An adopted process is not the agent's child, so its exit code
// cannot be known: when it disappears it counts as an unexpected exit with exit code -1. A
// recorded instance whose process is gone is handled as an unexpected exit at once. Run
// returns without stopping anything, so the next agent adopts the servers.
//
// # Exit codes
//
// exit_code is the process's exit status, or 128 plus the signal number when a signal killed
// it (the shell's convention), or -1 when it is unknown.
package supervisor
