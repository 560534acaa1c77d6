package fleetbench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// loadTokens is each request's max_tokens: about a third of a second on cpu-tiny.
	loadTokens = 64
	// loadMaxInFlight bounds the requests open at once; a tick beyond it is skipped, so that
	// servers that stop answering do not pile up goroutines and sockets.
	loadMaxInFlight = 64
	loadTimeout     = 30 * time.Second
)

// loadGen sends open-loop completions at a fixed rate, round-robin over the servers, so that
// the metrics the agent scrapes move.
type loadGen struct {
	rate      float64
	endpoints []string
	model     string
	client    *http.Client

	sent, ok, failed, skipped, inFlight atomic.Int64
	wg                                  sync.WaitGroup
	done                                chan struct{}
}

func newLoadGen(rate float64, endpoints []string, model string) *loadGen {
	return &loadGen{rate: rate, endpoints: endpoints, model: model, client: &http.Client{Timeout: loadTimeout}, done: make(chan struct{})}
}

// LoadPeriod is the time between two requests at rate requests a second; 0 for none.
func LoadPeriod(rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return max(time.Microsecond, time.Duration(float64(time.Second)/rate))
}

// run sends until ctx ends.
func (l *loadGen) run(ctx context.Context) {
	defer close(l.done)
	period := LoadPeriod(l.rate)
	if period == 0 || len(l.endpoints) == 0 {
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.inFlight.Load() >= loadMaxInFlight {
			l.skipped.Add(1)
			continue
		}
		l.inFlight.Add(1)
		l.sent.Add(1)
		l.wg.Add(1)
		go func(endpoint string) {
			defer l.wg.Done()
			defer l.inFlight.Add(-1)
			if err := l.request(ctx, endpoint); err != nil {
				l.failed.Add(1)
				return
			}
			l.ok.Add(1)
		}(l.endpoints[n%len(l.endpoints)])
	}
}

func (l *loadGen) request(ctx context.Context, endpoint string) error {
	body := fmt.Sprintf(`{"model":%q,"prompt":"hello","max_tokens":%d}`, l.model, loadTokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+endpoint+"/v1/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", endpoint, resp.Status)
	}
	return nil
}

// wait waits for run to end and for every request it sent; call after ending run's ctx.
func (l *loadGen) wait() {
	<-l.done
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

func (l *loadGen) counts() LoadCounts {
	return LoadCounts{Sent: l.sent.Load(), OK: l.ok.Load(), Failed: l.failed.Load(), Skipped: l.skipped.Load()}
}
