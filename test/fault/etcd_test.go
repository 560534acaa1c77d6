//go:build linux

package fault

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestEtcdMemberKill9 kills one etcd member with SIGKILL while the load goes on through the
// router, and starts it again on its data ten seconds later. The member killed is made the
// hardest one first: the raft leader, and the first of every controller's --etcd-endpoints.
// The two members left keep a quorum: the control plane goes on (a controller leads with
// every agent, admin calls answer and a write is stored), no client request fails, the
// instances stay as they were, and the restarted member rejoins from its data directory and
// catches up, so the cluster has three healthy members again.
func TestEtcdMemberKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a nine-host fleet")
	}
	f := newFleet(t, "em")
	addr := f.ctrlHosts[0].at(grpcPort)
	f.deploy(t, addr, 3, 3, 3)
	before, err := f.readyPids(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctrlLeader, err := f.leaderWithAgents()
	if err != nil {
		t.Fatal(err)
	}
	var cs llmscalerv1.GetClusterStatusResponse
	if err := f.router.call(t, addr, "GetClusterStatus", "", &cs); err != nil {
		t.Fatal(err)
	}
	members := memberIDs(&cs)
	if len(members) != 3 {
		t.Fatalf("etcd members %v, want 3", members)
	}
	const victim = 0 // e1: the first endpoint controllers are given
	name := fmt.Sprintf("etcd-e%d", victim+1)
	eventually(t, 30*time.Second, "e1 leading the etcd cluster", func() error {
		if i, err := f.etcdLeader(); err != nil || i == victim {
			return err
		}
		if err := f.moveEtcdLeader(victim); err != nil {
			return err
		}
		return fmt.Errorf("leadership handed to e1")
	})

	const loadFor = 25 * time.Second
	summary := filepath.Join(t.TempDir(), "load.json")
	load := f.router.start(t, "load", bin(t, "llmscaler"), "load", "--router", "http://"+f.router.at(routerPort),
		"--deployment", f.model, "--rps", "10", "--duration", loadFor.String(), "--json", summary, "--progress-interval", "5s")
	time.Sleep(6 * time.Second) // the load is running

	appliedBefore, err := f.etcdApplied(victim)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	f.procs[name].kill()
	t.Logf("killed etcd member e%d (the raft leader and the controllers' first endpoint, on host %s; controller %s led)", victim+1, f.etcd[victim].name, ctrlLeader)
	var newLeader int
	elected := eventually(t, 30*time.Second, "a new etcd leader among the members left", func() error {
		var err error
		if newLeader, err = f.etcdLeader(); err == nil && newLeader == victim {
			err = fmt.Errorf("e%d still leads", victim+1)
		}
		return err
	})
	// The control plane goes on: a controller leads with every agent, and a write is stored.
	var leaderAfter string
	admin := eventually(t, 30*time.Second, "a controller leading with every agent, and an admin write stored", func() error {
		var err error
		if leaderAfter, err = f.leading(); err != nil {
			return err
		}
		// The same spec again: a stored write that changes nothing.
		return f.router.call(t, addr, "ApplyDeployment", fmt.Sprintf(`{"deployment":{"name":%q,"profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":3,"max_replicas":3}}`, f.model), nil)
	})
	t.Logf("etcd e%d leads %v after the kill; controller %s leads with all agents and an admin write was stored %v after it",
		newLeader+1, elected.Round(10*time.Millisecond), leaderAfter, admin.Round(10*time.Millisecond))
	if ready, err := f.readyPids(addr); err != nil || !maps.Equal(ready, before) {
		t.Errorf("ListInstances with e1 down: %v (%v), want %v", ready, err, before)
	}
	// GetClusterStatus, from both controllers, while e1 is down: it answers within its own
	// bounds, lists all three members, and marks the dead one unreachable and not leading.
	for _, h := range f.ctrlHosts {
		called := time.Now()
		var cs llmscalerv1.GetClusterStatusResponse
		if err := f.router.call(t, h.at(grpcPort), "GetClusterStatus", "", &cs); err != nil {
			t.Errorf("GetClusterStatus from %s with e%d down, after %v: %v", h.at(grpcPort), victim+1, time.Since(called).Round(100*time.Millisecond), err)
			continue
		}
		var down []string
		leaders := 0
		for _, m := range cs.GetEtcdMembers() {
			if !m.GetReachable() {
				down = append(down, m.GetName())
			}
			if m.GetIsLeader() {
				leaders++
			}
		}
		if len(cs.GetEtcdMembers()) != 3 || len(down) != 1 || "etcd-"+down[0] != name || leaders != 1 {
			t.Errorf("GetClusterStatus from %s with %s down: members %v, unreachable %v, %d leading", h.at(grpcPort), name, cs.GetEtcdMembers(), down, leaders)
		}
	}
	if leaderAfter != ctrlLeader {
		t.Logf("the controller leadership moved from %s to %s", ctrlLeader, leaderAfter)
	}
	// What the member missed while it was down: entries applied by the two left.
	missed, err := f.etcdApplied(newLeader)
	if err != nil {
		t.Fatal(err)
	}

	time.Sleep(time.Until(killed.Add(10 * time.Second))) // the member stays down 10 s
	f.restart(name)
	rejoined := eventually(t, 60*time.Second, "the restarted member healthy and caught up", func() error {
		for i := range f.etcd {
			if err := f.etcdHealthy(i); err != nil {
				return err
			}
		}
		applied, err := f.etcdApplied(victim)
		if err != nil {
			return err
		}
		if applied < missed {
			return fmt.Errorf("e%d has applied index %v, the cluster %v", victim+1, applied, missed)
		}
		return nil
	})
	if err := f.router.call(t, addr, "GetClusterStatus", "", &cs); err != nil {
		t.Fatal(err)
	}
	if got := memberIDs(&cs); !slices.Equal(got, members) {
		t.Errorf("etcd members %v after the restart, %v before: want the same member back from its data", got, members)
	}
	t.Logf("e%d restarted on its data: all 3 members healthy and it caught up (applied index %v at the kill, the cluster's %v while it was down) %v after the restart",
		victim+1, appliedBefore, missed, rejoined.Round(10*time.Millisecond))
	if _, err := os.Stat(filepath.Join(envValue(f.specs[name].env, "ETCD_DIR"), "member", "wal")); err != nil {
		t.Errorf("the member's data directory: %v", err)
	}

	s := endLoad(t, load, loadFor, summary)
	t.Logf("load through the router: %d sent, %d ok, errors %v, TTFT p99 %.2fs max %.2fs", s.Sent, s.OK, s.ByKind, s.TTFT.P99, s.TTFT.Max)
	if s.Sent < 200 || s.OK != s.Sent || s.Errors != 0 {
		t.Errorf("load: %d sent, %d ok, %d failed (%v): want every request answered", s.Sent, s.OK, s.Errors, s.ByKind)
	}
	after, err := f.readyPids(addr)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, after) {
		t.Errorf("instances (id: pid) before the kill %v, after %v: want the same servers", before, after)
	}
	f.noActedDecisions(addr, killed, time.Now())
}

// TestEtcdUnreachable cuts the links of all three etcd hosts for 15 s, five times the
// controllers' session TTL (3 s), while the load goes on through the router. The leader must
// stop acting once its session is gone: neither controller leads, no command goes to an
// agent and no decision is journaled. The agents keep their servers (the same processes,
// answering on their hosts), and the router serves from its last routing table, so no
// client request fails. When etcd returns, a controller leads again with every agent
// reconnected and the same instances, and a ScaleDeployment made then takes effect.
func TestEtcdUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a ten-host fleet")
	}
	f := newFleetWith(t, "eu", fleetConfig{etcdApart: true})
	addr := f.ctrlHosts[0].at(grpcPort)
	f.deploy(t, addr, 2, 3, 2)
	// Held at 2 by hand, so that the autoscaler has no reason of its own to act.
	if err := f.router.call(t, addr, "ScaleDeployment", fmt.Sprintf(`{"name":%q,"replicas":2}`, f.model), nil); err != nil {
		t.Fatal(err)
	}
	servers, err := f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]int64{}
	for _, in := range servers {
		before[in.GetInstanceId()] = in.GetPid()
	}
	leader, err := f.leaderWithAgents()
	if err != nil {
		t.Fatal(err)
	}

	const loadFor, outage = 40 * time.Second, 15 * time.Second
	summary := filepath.Join(t.TempDir(), "load.json")
	load := f.router.start(t, "load", bin(t, "llmscaler"), "load", "--router", "http://"+f.router.at(routerPort),
		"--deployment", f.model, "--rps", "8", "--duration", loadFor.String(), "--json", summary, "--progress-interval", "5s")
	time.Sleep(4 * time.Second) // the load is running

	sent := map[string]float64{}
	for i, h := range f.ctrlHosts {
		mfs, err := f.scrape(h.at(httpPort))
		if err != nil {
			t.Fatal(err)
		}
		v, err := sentToAgents(mfs)
		if err != nil {
			t.Fatal(err)
		}
		sent[fmt.Sprintf("c%d", i+1)] = v
	}
	cutAt := time.Now()
	for _, h := range f.etcd {
		h.cut()
	}
	stopped := eventually(t, 30*time.Second, "no controller leading", func() error {
		for i, h := range f.ctrlHosts {
			if v, err := f.metric(h.at(httpPort), "llmscaler_controller_is_leader"); err != nil || v != 0 {
				return fmt.Errorf("c%d: is_leader %v (%v)", i+1, v, err)
			}
		}
		return nil
	})
	t.Logf("etcd cut off: %s (leader) stopped leading %v after the cut", leader, stopped.Round(10*time.Millisecond))

	// While etcd is gone: the servers live on and answer, and no controller sends anything.
	checks := 0
	tk := time.NewTicker(time.Second)
	for time.Since(cutAt) < outage {
		for _, in := range servers {
			if err := serverAnswers(f, in); err != nil {
				t.Errorf("while etcd was gone: %v", err)
			}
		}
		for i, h := range f.ctrlHosts {
			id := fmt.Sprintf("c%d", i+1)
			mfs, err := f.scrape(h.at(httpPort))
			if err != nil {
				t.Errorf("controller %s metrics while etcd was gone: %v", id, err)
				continue
			}
			if v, _ := value(mfs, "llmscaler_controller_is_leader"); v != 0 {
				t.Errorf("controller %s leads while etcd is gone", id)
			}
			if v, _ := sentToAgents(mfs); v != sent[id] {
				t.Errorf("controller %s sent agents %v messages of desired state or commands while etcd was gone", id, v-sent[id])
			}
		}
		checks++
		<-tk.C
	}
	tk.Stop()
	restoredAt := time.Now()
	for _, h := range f.etcd {
		h.restore()
	}
	back := eventually(t, 90*time.Second, "a leader with all three agents connected", func() error {
		_, err := f.leaderWithAgents()
		return err
	})
	newLeader, _ := f.leaderWithAgents()
	t.Logf("etcd cut off for %v (%d checks: servers alive and answering, no leader, no command); after the links came back, %s leads with all agents connected in %v",
		restoredAt.Sub(cutAt).Round(100*time.Millisecond), checks, newLeader, back.Round(100*time.Millisecond))
	var after map[string]int64
	same := eventually(t, 30*time.Second, "the same servers READY", func() error {
		var err error
		if after, err = f.readyPids(addr); err == nil && !maps.Equal(after, before) {
			err = fmt.Errorf("READY %v, before the cut %v", after, before)
		}
		return err
	})
	t.Logf("the same 2 servers READY %v after that", same.Round(100*time.Millisecond))
	f.noActedDecisions(addr, cutAt, time.Now())
	var ds llmscalerv1.ListDecisionsResponse
	if err := f.router.call(t, addr, "ListDecisions", fmt.Sprintf(`{"deployment":%q}`, f.model), &ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.GetDecisions() {
		if tm := d.GetTime().AsTime(); tm.After(cutAt.Add(stopped)) && tm.Before(restoredAt) {
			t.Errorf("a decision journaled while etcd was gone: %s at %v", d.GetReason(), tm)
		}
	}

	scaled := time.Now()
	if err := f.router.call(t, addr, "ScaleDeployment", fmt.Sprintf(`{"name":%q,"replicas":3}`, f.model), nil); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 60*time.Second, "3 READY after the ScaleDeployment", func() error {
		ready, err := f.readyPids(addr)
		if err == nil && len(ready) != 3 {
			err = fmt.Errorf("%d READY", len(ready))
		}
		return err
	})
	t.Logf("ScaleDeployment to 3 made %v after the links came back: 3 READY %v later", scaled.Sub(restoredAt).Round(100*time.Millisecond), took.Round(100*time.Millisecond))

	s := endLoad(t, load, loadFor, summary)
	t.Logf("load through the router: %d sent, %d ok, errors %v, TTFT p99 %.2fs max %.2fs", s.Sent, s.OK, s.ByKind, s.TTFT.P99, s.TTFT.Max)
	f.logRouterLink()
	if s.Sent < 250 || s.OK != s.Sent {
		t.Errorf("load: %d sent, %d ok (%v): want every request answered while etcd was gone", s.Sent, s.OK, s.ByKind)
	}
}

// serverAnswers checks that an instance's process lives and its /health answers the
// router's host.
func serverAnswers(f *fleet, in *llmscalerv1.InstanceStatus) error {
	if err := syscall.Kill(int(in.GetPid()), 0); err != nil {
		return fmt.Errorf("server %s (pid %d): %v", in.GetInstanceId(), in.GetPid(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.router.run(ctx, "curl", "-sf", "--max-time", "3", "http://"+in.GetEndpoint()+"/health"); err != nil {
		return fmt.Errorf("server %s: %v", in.GetInstanceId(), err)
	}
	return nil
}

// sentToAgents is how many desired states a controller has sent agents.
func sentToAgents(mfs map[string]*dto.MetricFamily) (float64, error) {
	if v, ok := value(mfs, "llmscaler_controller_desired_states_sent_total"); ok {
		return v, nil
	}
	return 0, fmt.Errorf("the controller exports no llmscaler_controller_desired_states_sent_total")
}

// readyPids maps the deployment's READY instances to their pids, through a controller.
func (f *fleet) readyPids(addr string) (map[string]int64, error) {
	ready, err := f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, in := range ready {
		out[in.GetInstanceId()] = in.GetPid()
	}
	return out, nil
}

// noActedDecisions fails the test for a journaled decision of the deployment, made between
// from and to, that acted.
func (f *fleet) noActedDecisions(addr string, from, to time.Time) {
	f.t.Helper()
	var ds llmscalerv1.ListDecisionsResponse
	if err := f.router.call(f.t, addr, "ListDecisions", fmt.Sprintf(`{"deployment":%q}`, f.model), &ds); err != nil {
		f.t.Fatal(err)
	}
	for _, d := range ds.GetDecisions() {
		if tm := d.GetTime().AsTime(); tm.After(from) && tm.Before(to) && d.GetActed() {
			f.t.Errorf("a decision acted at %v: %s (%v)", tm.Format("15:04:05.000"), d.GetReason(), strings.Join(d.GetCommands(), "; "))
		}
	}
}

// logRouterLink logs what the router saw of its link to the controllers, and the changes
// to its routing table after the first.
func (f *fleet) logRouterLink() {
	b, err := os.ReadFile(f.procs["router"].log)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if (strings.Contains(line, "llmscaler.link") && !strings.Contains(line, "report not delivered")) ||
			strings.Contains(line, "instance removed") || strings.Contains(line, "instance back") ||
			strings.Contains(line, "deployment removed") || strings.Contains(line, "instance ejected") {
			f.t.Log("router: " + line)
		}
	}
}

// memberIDs are the etcd member ids of a cluster status, sorted.
func memberIDs(cs *llmscalerv1.GetClusterStatusResponse) []string {
	var out []string
	for _, m := range cs.GetEtcdMembers() {
		out = append(out, m.GetName()+"="+m.GetId())
	}
	slices.Sort(out)
	return out
}

// envValue is the value of key in an environment list.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
