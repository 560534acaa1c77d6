//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// The addresses and the certificate directory (`llmscaler certs --out`) of the fleet the
// README's cookbook is written for, replaced by the test's.
const (
	readmeGRPC   = "127.0.0.1:7400"
	readmeHTTP   = "127.0.0.1:7401"
	readmeRouter = "127.0.0.1:7410"
	readmeTLS    = "/tmp/llmscaler-tls/"
)

// command is one command of the README's grpcurl cookbook.
type command struct {
	line    string // as the README writes it
	key     string // what it calls: an AdminService method, "Check", "list", "load", "readyz", ...
	stdout  string
	started time.Time
}

func (c *command) fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("cookbook: %s\n%s\nits output:\n%s", c.line, fmt.Sprintf(format, args...), c.stdout)
}

// decode reads the command's output as one JSON reply.
func (c *command) decode(t *testing.T, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(c.stdout), m); err != nil {
		c.fatalf(t, "decode the reply: %v", err)
	}
}

// decodeStream reads the replies a streaming call printed, one JSON object each.
func decodeStream[T any, M interface {
	*T
	proto.Message
}](t *testing.T, c *command) []M {
	t.Helper()
	var out []M
	dec := json.NewDecoder(strings.NewReader(c.stdout))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			c.fatalf(t, "split the replies: %v", err)
		}
		m := M(new(T))
		if err := protojson.Unmarshal(raw, m); err != nil {
			c.fatalf(t, "decode a reply: %v", err)
		}
		out = append(out, m)
	}
}

// cookbookKeys find what a command calls.
var cookbookKeys = []*regexp.Regexp{
	regexp.MustCompile(`\.(?:AdminService|Health)/(\w+)`),
	regexp.MustCompile(`(?:^|\s)bin/llmscaler (\w+)`),
	regexp.MustCompile(regexp.QuoteMeta(readmeGRPC) + ` (list|describe)\b`),
	regexp.MustCompile(regexp.QuoteMeta(readmeHTTP) + `/(\w+)`),
}

// cookbook returns the commands of the README's cookbook block: every line that is not blank
// or a comment, with its continuation lines.
func cookbook(t *testing.T, readme string) []*command {
	t.Helper()
	const begin, end = "<!-- cookbook:begin -->", "<!-- cookbook:end -->"
	_, rest, ok := strings.Cut(readme, begin)
	block, _, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 {
		t.Fatalf("README.md lacks the cookbook: no %s ... %s markers", begin, end)
	}
	body, ok := strings.CutPrefix(strings.TrimSpace(block), "```sh\n")
	body, ok2 = strings.CutSuffix(body, "```")
	if !ok || !ok2 {
		t.Fatalf("README.md's cookbook is not one ```sh block between its markers:\n%s", block)
	}
	var cmds []*command
	cont := ""
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if cont == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cont += s + " "
			continue
		}
		c := &command{line: cont + line}
		cont = ""
		for _, re := range cookbookKeys {
			if m := re.FindStringSubmatch(c.line); m != nil {
				c.key = m[1]
				break
			}
		}
		cmds = append(cmds, c)
	}
	if cont != "" {
		t.Fatalf("README.md's cookbook ends in a continued line: %s", cont)
	}
	if len(cmds) == 0 {
		t.Fatal("README.md's cookbook block has no command")
	}
	return cmds
}

var (
	rpcDecl   = regexp.MustCompile(`\brpc (\w+)\([^)]*\)\s*returns\s*\(\s*(stream\s)?`)
	loopback  = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	binPrefix = regexp.MustCompile(`(^|\s)bin/`)
	loadLine  = regexp.MustCompile(`(?m)^\s*(sent|ok|errors)\s+(\d+)`)
)

// adminMethods reads the AdminService methods from admin.proto, each with whether its reply
// streams.
func adminMethods(t *testing.T) map[string]bool {
	t.Helper()
	_, body, ok := strings.Cut(repoFile(t, "proto/llmscaler/v1/admin.proto"), "service AdminService {")
	body, _, ok2 := strings.Cut(body, "\n}")
	if !ok || !ok2 {
		t.Fatal("admin.proto has no service AdminService { ... }")
	}
	ms := map[string]bool{}
	for _, m := range rpcDecl.FindAllStringSubmatch(body, -1) {
		ms[m[1]] = m[2] != ""
	}
	if len(ms) == 0 {
		t.Fatal("no rpc found in admin.proto's AdminService")
	}
	return ms
}

// cookbookFleet is the fleet of the README's "Running the parts by hand" on free ports, with
// mutual TLS from `llmscaler certs`.
type cookbookFleet struct {
	grpc, http, router string
	tls                string // the certificates' directory
	root               string // the repository root, where the commands run
	bin                string // what the commands' bin/ stands for
	path               string // PATH, grpcurl's folder first
}

func startCookbookFleet(t *testing.T) *cookbookFleet {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not on PATH: the cookbook reads /readyz and /metrics with it")
	}
	f := &cookbookFleet{grpc: freePort(t), http: freePort(t), router: freePort(t), root: root,
		bin: filepath.Dir(bin(t, "llmscaler")), path: filepath.Dir(grpcurlPath(t)) + string(os.PathListSeparator) + os.Getenv("PATH")}
	dir := t.TempDir()
	f.tls = certs(t, "n1", "n2")
	// The test's own checks read the fleet as admin, as the cookbook's commands do.
	useTLS(t, f.grpc, f.tls, "admin")
	catPath := filepath.Join(dir, "catalog.yaml")
	cat := strings.ReplaceAll(repoFile(t, "examples/catalog-fake.yaml"), `"../bin/llmscaler"`, strconv.Quote(bin(t, "llmscaler")))
	if err := os.WriteFile(catPath, []byte(cat), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "controller", bin(t, "llmscaler-controller"), append([]string{"--data-dir", filepath.Join(dir, "c"), "--grpc-addr", f.grpc,
		"--http-addr", f.http, "--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t)}, tlsArgs(f.tls, "controller", "--")...)...)
	for _, id := range []string{"n1", "n2"} {
		start(t, "agent-"+id, bin(t, "llmscaler-agent"), append([]string{"--controller", f.grpc, "--node-id", id, "--gpu-backend", "fake",
			"--fake-gpus", "4", "--catalog", catPath, "--data-dir", filepath.Join(dir, id), "--http-addr", ""}, tlsArgs(f.tls, "node-"+id, "--")...)...)
	}
	start(t, "router", bin(t, "llmscaler-router"), append([]string{"--controller", f.grpc, "--listen", f.router}, tlsArgs(f.tls, "router", "--")...)...)
	eventually(t, 30*time.Second, "n1 and n2 connected with their profiles", func() error {
		for _, id := range []string{"n1", "n2"} {
			n, err := nodeOf(t, f.grpc, id)
			if err != nil {
				return err
			}
			if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED || len(n.GetProfiles()) == 0 {
				return fmt.Errorf("%s %v with profiles %v", id, n.GetState(), n.GetProfiles())
			}
		}
		return nil
	})
	eventually(t, 20*time.Second, "the router up", func() error {
		resp, err := http.Get("http://" + f.router + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return f
}

// cmdTimeout bounds each cookbook command; the longest is the 20 s load.
const cmdTimeout = 90 * time.Second

// run runs one command as the README's reader would, in the repository root against this
// fleet, and fails the test if it fails. A watch that -max-time ends exits with grpcurl's
// status for DeadlineExceeded: that, and only that, is its success.
func (f *cookbookFleet) run(t *testing.T, c *command, watch bool) {
	t.Helper()
	line := strings.NewReplacer(readmeGRPC, f.grpc, readmeHTTP, f.http, readmeRouter, f.router, readmeTLS, f.tls+"/").Replace(c.line)
	line = binPrefix.ReplaceAllString(line, "${1}"+f.bin+"/")
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", line)
	cmd.Dir = f.root
	cmd.Env = append(os.Environ(), "PATH="+f.path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	c.started = time.Now()
	err := cmd.Run()
	c.stdout = stdout.String()
	if err == nil {
		return
	}
	const grpcurlStatusOffset = 64 // grpcurl exits 64 + the gRPC code of a failed call
	if watch && strings.Contains(c.line, "-max-time") && cmd.ProcessState.ExitCode() == grpcurlStatusOffset+int(codes.DeadlineExceeded) &&
		strings.Contains(stderr.String(), "Code: DeadlineExceeded") {
		return
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: still running after %v", err, cmdTimeout)
	}
	t.Fatalf("cookbook command failed: %v\n  %s\nrun as:\n  %s\nstdout:\n%s\nstderr:\n%s", err, c.line, line, c.stdout, stderr.String())
}

// step checks one kind of cookbook command.
type step struct {
	// now checks the command's reply, and what it did at once, straight after it.
	now func(t *testing.T, c *command)
	// then waits for what the command set going. It runs before the next command that is not
	// a watch (a watch shows it happening), and at the end.
	then func(t *testing.T, c *command)
}

// TestCookbook runs every command of the README's grpcurl cookbook, in order, against real
// processes: the fleet of "Running the parts by hand" (a controller, agents n1 and n2 with 4
// fake GPUs each, a router) on free ports. Each command must succeed and do what the README
// says, and the whole is the operator's lifecycle: apply, scale up under load and back down
// after it, drain a node, list decisions, delete, no server left. Every AdminService method
// must appear in it.
func TestCookbook(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cmds := cookbook(t, repoFile(t, "README.md"))
	methods := adminMethods(t)
	var example llmscalerv1.ApplyDeploymentRequest
	if err := protojson.Unmarshal([]byte(repoFile(t, "examples/deployment-fake.json")), &example); err != nil {
		t.Fatalf("examples/deployment-fake.json: %v", err)
	}
	spec := example.GetDeployment()
	lc := &lifecycle{spec: spec}
	steps := lc.steps()
	for _, c := range cmds {
		if c.key == "" {
			t.Errorf("the cookbook's %q calls nothing TestCookbook knows: see cookbookKeys", c.line)
		} else if _, ok := steps[c.key]; !ok {
			t.Errorf("the cookbook's %q is not checked by TestCookbook: give %q a step", c.line, c.key)
		}
		for _, a := range loopback.FindAllString(c.line, -1) {
			if a != readmeGRPC && a != readmeHTTP && a != readmeRouter {
				t.Errorf("the cookbook's %q talks to %s, which is not in the README's fleet", c.line, a)
			}
		}
		if admin := "grpcurl " + strings.Join(tlsArgs(strings.TrimSuffix(readmeTLS, "/"), "admin", "-"), " ") + " "; strings.HasPrefix(c.line, "grpcurl ") && !strings.HasPrefix(c.line, admin) {
			t.Errorf("the cookbook's %q does not start with %q, the README fleet's admin certificate", c.line, admin)
		}
	}
	for m := range methods {
		if !slices.ContainsFunc(cmds, func(c *command) bool { return c.key == m }) {
			t.Errorf("the cookbook has no example of AdminService/%s", m)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Cleanup(func() { killServers(spec.GetName()) }) // first in, so it runs after every process is killed
	began := time.Now()
	f := startCookbookFleet(t)
	lc.addr = f.grpc
	t.Logf("fleet up in %v", time.Since(began).Round(time.Millisecond))
	var pending []*command // commands whose then has not run
	settle := func() {
		for _, c := range pending {
			if then := steps[c.key].then; then != nil {
				waited := time.Now()
				then(t, c)
				t.Logf("%5.1fs  waited for what %s set going", time.Since(waited).Seconds(), c.key)
			}
		}
		pending = nil
	}
	for _, c := range cmds {
		watch := methods[c.key]
		if !watch {
			settle()
		}
		f.run(t, c, watch)
		t.Logf("%5.1fs  %s", time.Since(c.started).Seconds(), c.line)
		steps[c.key].now(t, c)
		pending = append(pending, c)
	}
	settle()
	t.Logf("cookbook: %d commands in %v, the fleet's start included", len(cmds), time.Since(began).Round(time.Millisecond))
}

// lifecycle is what the cookbook's steps know of each other.
type lifecycle struct {
	addr      string
	spec      *llmscalerv1.DeploymentSpec // examples/deployment-fake.json, which the cookbook applies
	loadStart time.Time
	drained   string // the node being drained
	replicas  int    // READY replicas when the drain began
}

func (lc *lifecycle) steps() map[string]step {
	name, minR := lc.spec.GetName(), int(lc.spec.GetMinReplicas())
	return map[string]step{
		"list": {now: func(t *testing.T, c *command) {
			for _, want := range []string{"llmscaler.v1.AdminService", "grpc.health.v1.Health"} {
				if !strings.Contains(c.stdout, want+"\n") {
					c.fatalf(t, "%s not listed", want)
				}
			}
		}},
		"describe": {now: func(t *testing.T, c *command) {
			f := strings.Fields(c.line)
			if sym := f[len(f)-1]; !strings.HasPrefix(c.stdout, sym+" is a ") {
				c.fatalf(t, "no description of %s", sym)
			}
		}},
		"GetClusterStatus": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.GetClusterStatusResponse
			c.decode(t, &r)
			if r.GetLeader().GetId() == "" || r.GetEpoch() <= 0 || r.GetNodesConnected() != 2 || r.GetGpus() != 8 || len(r.GetEtcdMembers()) != 1 {
				c.fatalf(t, "want a leader, one etcd member, 2 nodes connected with 8 GPUs")
			}
		}},
		"ListNodes": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.ListNodesResponse
			c.decode(t, &r)
			var ids []string
			for _, n := range r.GetNodes() {
				ids = append(ids, n.GetNodeId())
				if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED || len(n.GetGpus()) != 4 || !slices.Contains(n.GetProfiles(), lc.spec.GetProfile()) {
					c.fatalf(t, "want %s connected with 4 GPUs and profile %s", n.GetNodeId(), lc.spec.GetProfile())
				}
			}
			if slices.Sort(ids); !slices.Equal(ids, []string{"n1", "n2"}) {
				c.fatalf(t, "nodes %v, want n1 and n2", ids)
			}
		}},
		"GetNode": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.GetNodeResponse
			c.decode(t, &r)
			if n := r.GetNode(); n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED || len(n.GetGpus()) != 4 {
				c.fatalf(t, "want a connected node with 4 GPUs")
			}
		}},
		"ApplyDeployment": {
			now: func(t *testing.T, c *command) {
				var r llmscalerv1.ApplyDeploymentResponse
				c.decode(t, &r)
				if !r.GetCreated() || r.GetDeployment().GetSpec().GetName() != name {
					c.fatalf(t, "want %s created", name)
				}
			},
			then: func(t *testing.T, _ *command) { waitReady(t, lc.addr, name, minR, 45*time.Second) },
		},
		"GetDeployment": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.GetDeploymentResponse
			c.decode(t, &r)
			d := r.GetDeployment()
			if !proto.Equal(d.GetSpec(), lc.spec) || d.GetStatus().GetDesiredReplicas() != uint32(minR) || d.GetStatus().GetReplicas()["READY"] != uint32(minR) {
				c.fatalf(t, "want the applied spec, %d desired and READY", minR)
			}
		}},
		"ListDeployments": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.ListDeploymentsResponse
			c.decode(t, &r)
			if len(r.GetDeployments()) != 1 || r.GetDeployments()[0].GetSpec().GetName() != name {
				c.fatalf(t, "want %s alone", name)
			}
		}},
		"ListInstances": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.ListInstancesResponse
			c.decode(t, &r)
			nodes := map[string]bool{}
			for _, in := range r.GetInstances() {
				if in.GetStatus().GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
					nodes[in.GetNodeId()] = true
				}
			}
			if len(byPhase(r.GetInstances(), llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)) != minR || len(nodes) != min(minR, 2) {
				c.fatalf(t, "want %d READY instances spread over the nodes", minR)
			}
		}},
		"WatchEndpoints": {now: func(t *testing.T, c *command) {
			rs := decodeStream[llmscalerv1.WatchEndpointsResponse](t, c)
			if len(rs) == 0 {
				c.fatalf(t, "no routing table")
			}
			var got []string
			for _, d := range rs[len(rs)-1].GetDeployments() {
				for _, e := range d.GetEndpoints() {
					if d.GetDeployment() == name {
						got = append(got, e.GetInstanceId())
					}
				}
			}
			ins, err := instances(t, lc.addr, name)
			if err != nil {
				t.Fatal(err)
			}
			var ready []string
			for _, s := range byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY) {
				ready = append(ready, s.GetInstanceId())
			}
			slices.Sort(got)
			if slices.Sort(ready); len(got) == 0 || !slices.Equal(got, ready) {
				c.fatalf(t, "endpoints %v, want the READY instances %v", got, ready)
			}
		}},
		"load": {now: func(t *testing.T, c *command) {
			sum := map[string]int{}
			for _, m := range loadLine.FindAllStringSubmatch(c.stdout, -1) {
				sum[m[1]], _ = strconv.Atoi(m[2])
			}
			if sum["sent"] == 0 || sum["ok"] != sum["sent"] || sum["errors"] != 0 {
				c.fatalf(t, "want every request answered, no error")
			}
			lc.loadStart = c.started
		}, then: func(t *testing.T, _ *command) {
			eventually(t, 30*time.Second, "a scale-up above min_replicas under the load", func() error {
				for _, d := range acted(decisions(t, lc.addr, name)) {
					if d.GetToReplicas() > d.GetFromReplicas() && d.GetToReplicas() > uint32(minR) && d.GetTime().AsTime().After(lc.loadStart) {
						t.Logf("scaled up: %s", d.GetReason())
						return nil
					}
				}
				return errors.New("none yet")
			})
		}},
		"ListDecisions": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.ListDecisionsResponse
			c.decode(t, &r)
			if len(r.GetDecisions()) == 0 {
				c.fatalf(t, "no decision")
			}
			for _, d := range r.GetDecisions() {
				if d.GetReason() == "" || d.GetDeployment() != name {
					c.fatalf(t, "a decision without a reason, or of another deployment")
				}
			}
		}},
		"ScaleDeployment": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.ScaleDeploymentResponse
			c.decode(t, &r)
			if sc := r.GetDeployment().GetScale(); sc.GetPaused() != (sc.ManualReplicas != nil) {
				c.fatalf(t, "want a count held with the autoscaler paused, or neither")
			}
		}, then: func(t *testing.T, c *command) {
			var r llmscalerv1.ScaleDeploymentResponse
			c.decode(t, &r)
			if sc := r.GetDeployment().GetScale(); sc.ManualReplicas != nil {
				waitReady(t, lc.addr, name, int(sc.GetManualReplicas()), 45*time.Second)
				return
			}
			// Back to the minimum, the autoscaler's doing, once the load has gone for the
			// scale-down delay and the stable window.
			eventually(t, 90*time.Second, fmt.Sprintf("back to %d replicas after the load", minR), func() error {
				var g llmscalerv1.GetDeploymentResponse
				if err := call(t, lc.addr, "GetDeployment", fmt.Sprintf(`{"name":%q}`, name), &g); err != nil {
					return err
				}
				if n := g.GetDeployment().GetStatus().GetDesiredReplicas(); n != uint32(minR) {
					return fmt.Errorf("desired %d", n)
				}
				for _, d := range acted(decisions(t, lc.addr, name)) {
					if d.GetToReplicas() < d.GetFromReplicas() && d.GetTime().AsTime().After(lc.loadStart) {
						return nil
					}
				}
				return errors.New("no scale-down decision since the load")
			})
			waitReady(t, lc.addr, name, minR, 60*time.Second)
		}},
		"CordonNode": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.CordonNodeResponse
			c.decode(t, &r)
			if n := r.GetNode(); !n.GetCordoned() || n.GetCordonReason() == "" || n.GetDraining() {
				c.fatalf(t, "want the node cordoned with its reason, not draining")
			}
		}},
		"DrainNode": {
			now: func(t *testing.T, c *command) {
				var r llmscalerv1.DrainNodeResponse
				c.decode(t, &r)
				if n := r.GetNode(); !n.GetCordoned() || !n.GetDraining() {
					c.fatalf(t, "want the node cordoned and draining")
				}
				lc.drained, lc.replicas = r.GetNode().GetNodeId(), 0
				moved := 0
				// Start before stop: they stay READY until their replacements are, a cold start from now.
				ins, err := instances(t, lc.addr, name)
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range ins {
					if in.GetStatus().GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
						lc.replicas++
						if in.GetNodeId() == lc.drained {
							moved++
						}
					}
				}
				if moved == 0 {
					c.fatalf(t, "no READY instance of %s on %s: the drain has nothing to move", name, lc.drained)
				}
			},
			then: func(t *testing.T, _ *command) {
				eventually(t, 60*time.Second, fmt.Sprintf("%s drained, its replicas moved", lc.drained), func() error {
					ins, err := instances(t, lc.addr, name)
					if err != nil {
						return err
					}
					elsewhere := 0
					for _, in := range ins {
						s := in.GetStatus()
						switch {
						case in.GetNodeId() == lc.drained && s.GetPhase() != llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED:
							return fmt.Errorf("%s on %s is %v", s.GetInstanceId(), lc.drained, s.GetPhase())
						case s.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY:
							elsewhere++
						}
					}
					if elsewhere != lc.replicas {
						return fmt.Errorf("%d READY elsewhere, want %d", elsewhere, lc.replicas)
					}
					return nil
				})
			},
		},
		"WatchEvents": {now: func(t *testing.T, c *command) {
			evs := decodeStream[llmscalerv1.WatchEventsResponse](t, c)
			if len(evs) == 0 {
				c.fatalf(t, "no event")
			}
			for _, e := range evs {
				if e.GetEvent().GetDeployment() != name {
					c.fatalf(t, "an event not about %s", name)
				}
				t.Logf("event: %v %s", e.GetEvent().GetType(), e.GetEvent().GetMessage())
			}
		}},
		"UncordonNode": {now: func(t *testing.T, c *command) {
			var r llmscalerv1.UncordonNodeResponse
			c.decode(t, &r)
			n, err := nodeOf(t, lc.addr, r.GetNode().GetNodeId())
			if err != nil {
				t.Fatal(err)
			}
			if r.GetNode().GetCordoned() || n.GetCordoned() || n.GetDraining() || n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
				c.fatalf(t, "want the node schedulable: connected, neither cordoned nor draining; it is %v", n)
			}
		}},
		"DeleteDeployment": {
			now: func(t *testing.T, c *command) { c.decode(t, &llmscalerv1.DeleteDeploymentResponse{}) },
			then: func(t *testing.T, _ *command) {
				eventually(t, 45*time.Second, "no instance and no server process left", func() error {
					if pids := serversOf(name); len(pids) > 0 {
						return fmt.Errorf("fakeserver pids %v of %s still run", pids, name)
					}
					ins, err := instances(t, lc.addr, name)
					if err != nil {
						return err
					}
					if live := len(ins) - len(byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED)); live > 0 {
						return fmt.Errorf("%d instances of %s not STOPPED", live, name)
					}
					return nil
				})
			},
		},
		"Check": {now: func(t *testing.T, c *command) {
			var r healthpb.HealthCheckResponse
			c.decode(t, &r)
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				c.fatalf(t, "want SERVING")
			}
		}},
		"readyz": {now: func(t *testing.T, c *command) {
			if !strings.HasPrefix(c.stdout, "ok") {
				c.fatalf(t, "want ok")
			}
		}},
		"metrics": {now: func(t *testing.T, c *command) {
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(strings.NewReader(c.stdout))
			if err != nil {
				c.fatalf(t, "parse the metrics: %v", err)
			}
			if len(fams) == 0 {
				c.fatalf(t, "no metric")
			}
			leader := false
			for n, fam := range fams {
				if !strings.HasPrefix(n, "llmscaler_") {
					c.fatalf(t, "metric %s is not llmscaler's", n)
				}
				for _, m := range fam.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "deployment" && l.GetValue() == "fake" {
							c.fatalf(t, "%s still has a series of the deleted deployment fake", n)
						}
					}
					// grep drops the # TYPE lines, so the parser sees untyped samples.
					if n == "llmscaler_controller_is_leader" && m.GetUntyped().GetValue()+m.GetGauge().GetValue() == 1 {
						leader = true
					}
				}
			}
			if !leader {
				c.fatalf(t, "llmscaler_controller_is_leader is not 1")
			}
		}},
	}
}
