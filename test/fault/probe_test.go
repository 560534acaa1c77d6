//go:build linux

package fault

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// scrape reads the Prometheus metrics at addr (host:port) from the router's host, which
// reaches every other host.
func (f *fleet) scrape(addr string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := f.router.run(ctx, "curl", "-sf", "--max-time", "3", "http://"+addr+"/metrics")
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", addr, err)
	}
	return mfs, nil
}

// value is the sum of a gauge's or counter's series; ok is false when the family is absent.
func value(mfs map[string]*dto.MetricFamily, name string) (v float64, ok bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		v += m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
	}
	return v, true
}

// metric scrapes addr and returns one of its figures.
func (f *fleet) metric(addr, name string) (float64, error) {
	mfs, err := f.scrape(addr)
	if err != nil {
		return 0, err
	}
	v, ok := value(mfs, name)
	if !ok {
		return 0, fmt.Errorf("%s exports no %s", addr, name)
	}
	return v, nil
}

// etcdHealthy asks member i's /health (a linearizable read through the member: it needs
// a raft leader and a quorum).
func (f *fleet) etcdHealthy(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := f.router.run(ctx, "curl", "-s", "--max-time", "3", "http://"+f.etcd[i].at(etcdClientPort)+"/health")
	if err != nil {
		return fmt.Errorf("etcd e%d: %w", i+1, err)
	}
	if !strings.Contains(out, `"health":"true"`) {
		return fmt.Errorf("etcd e%d: /health %s", i+1, strings.TrimSpace(out))
	}
	return nil
}

// etcdLeader returns the index of the member that leads the raft group, by its own
// metrics; members that do not answer are skipped.
func (f *fleet) etcdLeader() (int, error) {
	for i, h := range f.etcd {
		if v, err := f.metric(h.at(etcdClientPort), "etcd_server_is_leader"); err == nil && v == 1 {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no etcd member says it leads")
}

// etcdApplied is the raft index member i has applied.
func (f *fleet) etcdApplied(i int) (float64, error) {
	return f.metric(f.etcd[i].at(etcdClientPort), "etcd_server_proposals_applied_total")
}

// runMoveLeader hands the etcd cluster's leadership to the member named ETCD_TARGET, asking
// the members at ETCD_ENDPOINTS: the role of a test binary run on a host by moveEtcdLeader.
func runMoveLeader() int {
	if err := moveLeader(strings.Split(os.Getenv("ETCD_ENDPOINTS"), ","), os.Getenv("ETCD_TARGET")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func moveLeader(endpoints []string, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ms, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	var to uint64
	for _, m := range ms.Members {
		if m.Name == target {
			to = m.ID
		}
	}
	if to == 0 {
		return fmt.Errorf("no etcd member %q", target)
	}
	// MoveLeader must reach the leader itself.
	for _, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil || st.Leader != st.Header.MemberId {
			continue
		}
		if st.Leader == to {
			return nil
		}
		lc, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer lc.Close()
		_, err = lc.MoveLeader(ctx, to)
		return err
	}
	return fmt.Errorf("no etcd member at %v leads", endpoints)
}

// moveEtcdLeader makes member i the etcd leader.
func (f *fleet) moveEtcdLeader(i int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var endpoints []string
	for _, h := range f.etcd {
		endpoints = append(endpoints, h.at(etcdClientPort))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = f.router.run(ctx, "env", roleEnv+"=etcd-move-leader", "ETCD_ENDPOINTS="+strings.Join(endpoints, ","),
		fmt.Sprintf("ETCD_TARGET=e%d", i+1), self, "-test.run=^$")
	return err
}

// leading returns the id of the controller that says it leads (its is_leader gauge) once it
// sees every agent connected; unlike leaderWithAgents it does not need GetClusterStatus.
func (f *fleet) leading() (string, error) {
	for i, h := range f.ctrlHosts {
		id := fmt.Sprintf("c%d", i+1)
		if p := f.controllers[id]; p == nil || exited(p) {
			continue
		}
		if v, err := f.metric(h.at(httpPort), "llmscaler_controller_is_leader"); err != nil || v != 1 {
			continue
		}
		var nodes llmscalerv1.ListNodesResponse
		if err := f.router.call(f.t, h.at(grpcPort), "ListNodes", "", &nodes); err != nil {
			return "", err
		}
		connected := 0
		for _, n := range nodes.GetNodes() {
			if n.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED {
				connected++
			}
		}
		if connected != len(f.agents) {
			return "", fmt.Errorf("leader %s sees %d of %d agents connected", id, connected, len(f.agents))
		}
		return id, nil
	}
	return "", fmt.Errorf("no controller says it leads")
}
