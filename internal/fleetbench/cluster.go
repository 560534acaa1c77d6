package fleetbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// controllerProc is one controller process the bench runs.
type controllerProc struct {
	*child
	id, grpcAddr, httpAddr, pprofAddr string
	conn                              *grpc.ClientConn
	admin                             llmscalerv1.AdminServiceClient
}

// controllerFlags reads which optional flags the controller binary has, from its -h.
func controllerFlags(path string) (string, error) {
	out, err := exec.Command(path, "-h").CombinedOutput()
	if len(out) == 0 && err != nil {
		return "", fmt.Errorf("%s -h: %w", path, err)
	}
	return string(out), nil
}

// startEtcd runs `llmscaler bench etcd`, its data in dir and its log in logs, and returns
// its client endpoint.
func startEtcd(ctx context.Context, dir, logs, self string) (*child, string, error) {
	client, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	peer, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	defer r.Close()
	c, err := startChild(logs, "etcd", self, []string{"bench", "etcd", "--data-dir", filepath.Join(dir, "etcd"), "--client-addr", client, "--peer-addr", peer}, nil, w)
	if err != nil {
		return nil, "", err
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var e struct{ Event, Endpoint string }
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Event == evReady {
				ready <- e.Endpoint
				break
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	select {
	case ep := <-ready:
		return c, ep, nil
	case <-c.done:
		return nil, "", c.exitError()
	case <-t.C:
		c.kill()
		return nil, "", fmt.Errorf("etcd not ready within 60s; log %s:\n%s", c.log, indent(c.tail(15)))
	case <-ctx.Done():
		c.kill()
		return nil, "", ctx.Err()
	}
}

// startController runs llmscaler-controller n with its own ports, its data in dir and its
// log in logs: embedded etcd when etcdEndpoint is empty. Admin changes are not rate-limited: the bench applies dozens.
func startController(dir, logs, path string, n int, etcdEndpoint string, interval time.Duration, pprof bool) (*controllerProc, error) {
	cp := &controllerProc{id: fmt.Sprintf("bench-c%d", n)}
	var err error
	if cp.grpcAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if cp.httpAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	args := []string{"--id", cp.id, "--grpc-addr", cp.grpcAddr, "--http-addr", cp.httpAddr, "--insecure",
		"--report-interval", interval.String(), "--admin-rate", "0"}
	if etcdEndpoint != "" {
		args = append(args, "--etcd-endpoints", etcdEndpoint)
	} else {
		ec, err := freeAddr()
		if err != nil {
			return nil, err
		}
		ep, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args = append(args, "--data-dir", filepath.Join(dir, cp.id), "--etcd-client-addr", ec, "--etcd-peer-addr", ep)
	}
	if pprof {
		if cp.pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "--pprof-addr", cp.pprofAddr)
	}
	if cp.child, err = startChild(logs, cp.id, path, args, nil, nil); err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient("passthrough:///"+cp.grpcAddr, adminDialOptions()...)
	if err != nil {
		cp.kill()
		return nil, err
	}
	cp.conn, cp.admin = cc, llmscalerv1.NewAdminServiceClient(cc)
	return cp, nil
}

// adminReplyLimit is what the bench accepts, far above llmscaler's own 4 MiB, so that a
// reply too large for the real clients is measured rather than refused.
const adminReplyLimit = 256 << 20

func adminDialOptions() []grpc.DialOption {
	return append(transport.DialOptions(transport.Plaintext), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(adminReplyLimit)))
}

// status asks the controller who leads; a short deadline, since it is polled.
func (cp *controllerProc) status(ctx context.Context) (*llmscalerv1.GetClusterStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return cp.admin.GetClusterStatus(ctx, &llmscalerv1.GetClusterStatusRequest{})
}

// metrics scrapes the controller's /metrics, patiently: a loaded controller is slow to
// answer, and a missed scrape would end the run.
func (cp *controllerProc) metrics(ctx context.Context) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return getMetrics(ctx, "http://"+cp.httpAddr+"/metrics")
}

func getMetrics(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

func (cp *controllerProc) close() {
	if cp.conn != nil {
		cp.conn.Close()
	}
	if cp.child != nil {
		cp.stop(5 * time.Second)
	}
}

// hasFlag reports whether a -h text lists the flag.
func hasFlag(help, name string) bool {
	return strings.Contains(help, "-"+name+" ") || strings.Contains(help, "-"+name+"\n")
}

// startCluster starts the etcd (failover only) and the controllers, and waits for a leader.
func (b *Bench) startCluster(ctx context.Context) error {
	help, err := controllerFlags(b.cfg.Controller)
	if err != nil {
		return err
	}
	pprof := b.cfg.Pprof
	if pprof && !hasFlag(help, "pprof-addr") {
		b.note("--pprof: %s has no --pprof-addr flag; no profiles taken", b.cfg.Controller)
		pprof = false
	}
	endpoint := ""
	n := 1
	if b.cfg.Failover {
		b.etcd, endpoint, err = startEtcd(ctx, b.tmp, b.logs, b.cfg.Self)
		if err != nil {
			return err
		}
		n = 2
	}
	for i := range n {
		cp, err := startController(b.tmp, b.logs, b.cfg.Controller, i, endpoint, b.cfg.Interval, pprof)
		if err != nil {
			return err
		}
		b.ctrls = append(b.ctrls, cp)
	}
	return b.waitFor(ctx, 60*time.Second, 200*time.Millisecond, "a controller leads", func() (bool, error) {
		for _, cp := range b.ctrls {
			if cp.exited() {
				return false, cp.exitError()
			}
		}
		st, err := b.ctrls[0].status(ctx)
		if err != nil {
			return false, nil
		}
		return st.GetLeader().GetId() != "", nil
	})
}

// applyDeployments applies the fleet and probe deployments before any agent connects.
func (b *Bench) applyDeployments(ctx context.Context) error {
	admin := b.ctrls[0].admin
	for _, spec := range DeploymentSpecs(b.layout) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := admin.ApplyDeployment(cctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec})
		cancel()
		if err != nil {
			return fmt.Errorf("apply deployment %s: %w", spec.GetName(), err)
		}
	}
	return nil
}

// leader is the controller that leads now, as the live controllers say. A controller busy
// with thousands of streams may miss a status deadline, so it is asked again for up to
// leaderPatience before the bench gives up.
func (b *Bench) leader(ctx context.Context) (*controllerProc, *llmscalerv1.GetClusterStatusResponse, error) {
	var (
		cp      *controllerProc
		st      *llmscalerv1.GetClusterStatusResponse
		lastErr error
	)
	err := b.waitFor(ctx, leaderPatience, 500*time.Millisecond, "a controller says who leads", func() (bool, error) {
		cp, st, lastErr = b.askLeader(ctx)
		return lastErr == nil, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", err, lastErr)
	}
	return cp, st, nil
}

// leaderPatience bounds leader's retries.
const leaderPatience = 30 * time.Second

// askLeader asks each live controller once who leads.
func (b *Bench) askLeader(ctx context.Context) (*controllerProc, *llmscalerv1.GetClusterStatusResponse, error) {
	var lastErr error
	for _, cp := range b.live() {
		st, err := cp.status(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		for _, c := range b.ctrls {
			if c.id == st.GetLeader().GetId() {
				return c, st, nil
			}
		}
		lastErr = fmt.Errorf("leader %q is not a controller of this bench", st.GetLeader().GetId())
	}
	if lastErr == nil {
		lastErr = errors.New("no controller is running")
	}
	return nil, nil, lastErr
}

// live are the controllers not killed by the failover.
func (b *Bench) live() []*controllerProc {
	var out []*controllerProc
	for _, cp := range b.ctrls {
		if cp != b.victim.Load() {
			out = append(out, cp)
		}
	}
	return out
}
