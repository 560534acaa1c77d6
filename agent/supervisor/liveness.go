package supervisor

import (
	"fmt"
	"syscall"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// busyMessage is a READY instance's message while its health checks fail but its metrics
// show it working.
const busyMessage = "health check failing but making progress"

// progressWindow is what the scrapes of one instance showed between two of its health
// checks: from the scrapes applied after the previous check up to the scrape taken in the
// same tick as this one (the tick applies scrapes before health checks).
type progressWindow struct {
	// signal: at least one scrape in the window could show progress, because it succeeded
	// and the same process had been scraped successfully before it. Without a MetricsSource,
	// or while scrapes fail, there is no signal.
	signal bool
	// moved: one of those scrapes showed the server working; see showsProgress.
	moved bool
}

// showsProgress reports whether scrape cur of a server, compared with prev, the scrape of the
// same process before it, shows the server working: a cumulative figure it exports grew
// between the two (prompt tokens, generated tokens, finished requests, time-to-first-token
// or end-to-end latency observations: the scraper turns their deltas into rates and counts),
// or its running batch changed size, or its queue shrank (requests admitted or finished).
// A queue that only grows is not progress: a stuck engine behind a live HTTP frontend still
// queues what arrives. The gauges are written by the engines themselves, so a wedged engine
// leaves them as they were.
//
// A dialect that exports no counters is judged by the gauges alone, and one whose gauges do
// not move either never shows progress: its health check alone decides, as before.
func showsProgress(prev, cur *llmscalerv1.QueueMetrics) bool {
	switch {
	case cur.GetPromptTokensPerSecond() > 0, cur.GetGenerationTokensPerSecond() > 0, cur.GetFinishedRequestsPerSecond() > 0,
		cur.GetTtft().GetCount() > 0, cur.GetE2ELatency().GetCount() > 0:
		return true
	}
	return cur.GetRunning() != prev.GetRunning() || cur.GetWaiting() < prev.GetWaiting()
}

// verdict is what one health check makes of a READY instance.
type verdict int

const (
	// verdictHealthy: the health path answered.
	verdictHealthy verdict = iota + 1
	// verdictBusy: it did not answer, but the scrapes since the last check show progress:
	// busy, not hung. It ends any run of failures.
	verdictBusy
	// verdictFailing: neither an answer nor progress, fewer than UnhealthyChecks times in a
	// row.
	verdictFailing
	// verdictHung: neither an answer nor progress UnhealthyChecks times in a row: kill it.
	verdictHung
)

// judge decides on one health check of a READY instance. healthy says whether the health path
// answered, w what the scrapes showed since the previous check, failures how many checks in a
// row before this one had neither an answer nor progress, and limit is UnhealthyChecks. It
// returns the verdict and the new count of failures.
//
// Where there is no progress signal (no metrics, failing scrapes, a dialect whose figures do
// not move) a failed check counts as a failure, so the health check alone decides, as it did
// before progress was looked at.
func judge(healthy bool, w progressWindow, failures, limit int) (verdict, int) {
	switch {
	case healthy:
		return verdictHealthy, 0
	case w.moved:
		return verdictBusy, 0
	}
	failures++
	if failures >= limit {
		return verdictHung, failures
	}
	return verdictFailing, failures
}

// noteScrapeLocked adds a successful scrape of inst's current process to its progress window.
func (inst *instance) noteScrapeLocked(m *llmscalerv1.QueueMetrics) {
	if inst.lastScrape != nil {
		inst.progress.signal = true
		if showsProgress(inst.lastScrape, m) {
			inst.progress.moved = true
		}
	}
	inst.lastScrape = m
}

// livenessLocked records a READY instance's health check. A server that stops answering
// while its process lives on (a deadlocked engine, a wedged GPU) would otherwise stay READY
// forever: after UnhealthyChecks checks in a row with neither an answer nor progress in its
// metrics, its process group is killed, and its exit is handled as a crash, restarted with
// backoff up to max_restarts. A server that does not answer while its metrics move is busy,
// not hung (llama.cpp's llama-server stops answering /health in time under a long queue): it
// stays READY, with busyMessage as its message.
func (s *Supervisor) livenessLocked(inst *instance, err error) {
	w := inst.progress
	inst.progress = progressWindow{}
	v, failures := judge(err == nil, w, inst.unhealthy, s.cfg.UnhealthyChecks)
	inst.unhealthy = failures
	switch v {
	case verdictHealthy:
		if inst.busyChecks > 0 {
			inst.log.Info("health check answers again", "busy_checks", inst.busyChecks)
		}
		inst.busyChecks = 0
		s.setBusyMessageLocked(inst, false)
		return
	case verdictBusy:
		inst.busyChecks++
		if inst.busyChecks == 1 {
			inst.log.Warn("health check failing but making progress; busy, not hung", "error", err)
		} else {
			inst.log.Debug("health check still failing while making progress", "busy_checks", inst.busyChecks, "error", err)
		}
		s.setBusyMessageLocked(inst, true)
		return
	}
	s.setBusyMessageLocked(inst, false)
	inst.log.Warn("ready instance failed a health check and shows no progress",
		"failures", failures, "of", s.cfg.UnhealthyChecks, "progress_signal", w.signal, "error", err)
	if v != verdictHung || !inst.watched {
		return
	}
	why := "no progress in its metrics"
	if !w.signal {
		why = "no metrics scraped to show progress"
	}
	inst.hung = fmt.Sprintf("hung: not healthy for %d checks %s apart, with %s (%v)", failures, s.cfg.HealthInterval, why, err)
	inst.log.Error("instance hung; killing its process group", "pid", inst.PID, "failures", failures)
	if err := signalGroup(inst.PID, syscall.SIGKILL); err != nil {
		inst.log.Warn("cannot kill the hung instance", "error", err)
	}
}

// setBusyMessageLocked makes busyMessage inst's message while busy; otherwise it takes
// busyMessage away and leaves any other message as it is.
func (s *Supervisor) setBusyMessageLocked(inst *instance, busy bool) {
	switch {
	case busy && inst.Message != busyMessage:
		inst.Message = busyMessage
	case !busy && inst.Message == busyMessage:
		inst.Message = ""
	default:
		return
	}
	s.dirty = true
}
