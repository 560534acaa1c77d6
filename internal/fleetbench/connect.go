package fleetbench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// connect has the agents dial and waits until every one is welcomed and has reported.
func (b *Bench) connect(ctx context.Context) error {
	if err := b.agents.send(command{Cmd: cmdConnect}); err != nil {
		return err
	}
	n := b.cfg.Agents
	err := b.waitFor(ctx, b.cfg.ConnectTimeout, 100*time.Millisecond, fmt.Sprintf("all %d agents connected and reporting", n), func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		return b.agents.latest().AllReportingAt != 0, nil
	})
	s := b.agents.latest()
	c := &b.res.Connect
	c.Mode = "ramp"
	if b.cfg.Storm {
		c.Mode = "storm"
	}
	c.AllConnected = s.AllReportingAt != 0
	c.Connected, c.Reporting = s.Connected, s.Reporting
	if c.AllConnected {
		c.Seconds = time.Duration(s.AllReportingAt - s.FirstDial).Seconds()
	}
	c.Dials, c.Refused, c.Redirects = s.Dials, s.Refused, s.Redirects
	c.Retries = max(0, s.Dials-int64(n))
	c.Desired, c.DesiredChanges = s.Desired, s.DesiredChanges
	c.Errors = s.LastErrors
	if err != nil {
		if len(s.LastErrors) > 0 {
			err = fmt.Errorf("%w; %d connected, %d reporting; last agent errors:\n  %s", err, s.Connected, s.Reporting, strings.Join(s.LastErrors, "\n  "))
		}
		return err
	}
	return nil
}
