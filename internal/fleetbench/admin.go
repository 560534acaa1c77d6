package fleetbench

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// adminCall is one admin method as a person or a dashboard calls it.
type adminCall struct {
	name string
	call func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error)
}

func (b *Bench) adminCallsList() []adminCall {
	return []adminCall{
		{"GetClusterStatus", func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error) {
			return c.GetClusterStatus(ctx, &llmscalerv1.GetClusterStatusRequest{})
		}},
		{"ListNodes", func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error) {
			return c.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
		}},
		{"ListNodes(page_size=1000)", func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error) {
			return c.ListNodes(ctx, &llmscalerv1.ListNodesRequest{PageSize: 1000})
		}},
		{"ListInstances", func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error) {
			return c.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{})
		}},
		{"ListDeployments", func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error) {
			return c.ListDeployments(ctx, &llmscalerv1.ListDeploymentsRequest{})
		}},
		{"GetNode", func(ctx context.Context, c llmscalerv1.AdminServiceClient) (proto.Message, error) {
			return c.GetNode(ctx, &llmscalerv1.GetNodeRequest{NodeId: b.layout.NodeID(rand.IntN(b.layout.Agents))})
		}},
	}
}

// adminCalls times cfg.AdminCalls calls of each admin method on the leader, one at a time,
// and checks that every reply fits the 4 MiB message limit of llmscaler's own clients.
func (b *Bench) adminCalls(ctx context.Context) error {
	leader, _, err := b.leader(ctx)
	if err != nil {
		return err
	}
	for _, ac := range b.adminCallsList() {
		r := AdminResult{Method: ac.name, UnderLimit: true}
		var took []time.Duration
		for range b.cfg.AdminCalls {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			start := time.Now()
			reply, err := ac.call(cctx, leader.admin)
			d := time.Since(start)
			cancel()
			r.Calls++
			if err != nil {
				r.Errors++
				r.LastError = err.Error()
				continue
			}
			took = append(took, d)
			r.ReplyBytes = proto.Size(reply)
			r.MaxReplyBytes = max(r.MaxReplyBytes, r.ReplyBytes)
			if r.ReplyBytes >= transport.MaxMessageBytes {
				r.UnderLimit = false
			}
		}
		r.Latency = Summarize(took)
		if !r.UnderLimit {
			b.fail("admin %s replied %d bytes, at or above the %d-byte message limit of llmscaler's clients", ac.name, r.MaxReplyBytes, transport.MaxMessageBytes)
		}
		if r.Errors > 0 {
			b.fail("admin %s: %d of %d calls failed: %s", ac.name, r.Errors, r.Calls, r.LastError)
		}
		b.res.Admin = append(b.res.Admin, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}
