package fleetbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/llmscaler/llmscaler/internal/embedetcd"
)

// RunEtcd is the hidden `llmscaler bench etcd`: one etcd member in a process of its own, so
// that with --failover the leader controller can be killed without taking the desired state
// with it. It writes one ready line with the client endpoint and serves until ctx ends.
func RunEtcd(ctx context.Context, cfg embedetcd.Config, out io.Writer) error {
	s, err := embedetcd.Start(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := json.NewEncoder(out).Encode(map[string]string{"event": evReady, "endpoint": s.Endpoint()}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}
