package agent

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/llmscaler/llmscaler/agent/gpu"
	"github.com/llmscaler/llmscaler/agent/scrape"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// maxMetricsBody caps one scrape of a server's metrics endpoint.
const maxMetricsBody = 4 << 20

// scrapers is the supervisor's MetricsSource: one scrape.Scraper per instance, which keeps
// the previous scrape to turn counters and histograms into per-interval figures.
type scrapers struct {
	client *http.Client
	now    func() time.Time
	failed func()

	mu sync.Mutex
	by map[string]*instanceScraper
}

type instanceScraper struct {
	s      *scrape.Scraper
	errors uint64
	last   *llmscalerv1.QueueMetrics
	seen   time.Time
}

func newScrapers(now func() time.Time, failed func()) *scrapers {
	return &scrapers{client: &http.Client{Timeout: 2 * time.Second}, now: now, failed: failed, by: map[string]*instanceScraper{}}
}

// Scrape fetches and parses one instance's metrics. A failed scrape is counted on the
// instance and returned, so the supervisor keeps the previous figures.
func (s *scrapers) Scrape(ctx context.Context, instanceID, dialect, url string) (*llmscalerv1.QueueMetrics, error) {
	d, err := scrape.ParseDialect(dialect)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	is := s.by[instanceID]
	if is == nil {
		is = &instanceScraper{s: scrape.New(d, maxMetricsBody)}
		s.by[instanceID] = is
	}
	s.gc()
	s.mu.Unlock()

	body, err := scrape.Fetch(ctx, s.client, url, maxMetricsBody)
	var m *llmscalerv1.QueueMetrics
	if err == nil {
		m, err = is.s.Update(bytes.NewReader(body), s.now())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	is.seen = s.now()
	if err != nil {
		is.errors++
		s.failed()
		return nil, fmt.Errorf("scrape %s: %w", instanceID, err)
	}
	m.ScrapeErrors = is.errors
	is.last = m
	return m, nil
}

// gc forgets instances not scraped for ten minutes; the caller holds mu.
func (s *scrapers) gc() {
	for id, is := range s.by {
		if !is.seen.IsZero() && s.now().Sub(is.seen) > 10*time.Minute {
			delete(s.by, id)
		}
	}
}

// fakeLoads turns what the instances report into what the simulated GPUs show: the memory
// their profile needs and a utilization that rises with the requests running (a GPU serving
// a batch of four or more reads 100 %, as a busy vLLM replica does).
func fakeLoads(ins []*llmscalerv1.InstanceStatus, memoryOf func(profile string) uint64) map[uint32]gpu.FakeLoad {
	out := map[uint32]gpu.FakeLoad{}
	for _, in := range ins {
		switch in.GetPhase() {
		case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
		default:
			continue
		}
		util := min(100, 25*in.GetMetrics().GetRunning())
		for _, g := range in.GetGpuIndices() {
			out[g] = gpu.FakeLoad{MemoryMiB: memoryOf(in.GetProfile()), Utilization: util}
		}
	}
	return out
}
