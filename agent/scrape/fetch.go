package scrape

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// acceptHeader asks for the classic text format, the one Update parses, as Prometheus does
// when it scrapes without protobuf.
const acceptHeader = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"

// Fetch GETs url with ctx and returns the body. It refuses answers other than 200 and bodies
// over maxBytes (0 or less: DefaultMaxBodyBytes), the latter with an error wrapping
// ErrBodyTooLarge. A nil c means http.DefaultClient; c's timeout and ctx both apply.
func Fetch(ctx context.Context, c *http.Client, url string, maxBytes int64) ([]byte, error) {
	if c == nil {
		c = http.DefaultClient
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBodyBytes
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics request: %w", err)
	}
	req.Header.Set("Accept", acceptHeader)
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("get metrics %s: %s", url, resp.Status)
	}
	if resp.ContentLength > maxBytes {
		return nil, fmt.Errorf("get metrics %s: %w: %d bytes over %d", url, ErrBodyTooLarge, resp.ContentLength, maxBytes)
	}
	body, err := readLimited(resp.Body, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("get metrics %s: %w", url, err)
	}
	return body, nil
}
