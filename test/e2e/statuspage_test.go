//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// chromiumPath finds the browser that renders the status page. CI installs it; only a -short
// run, which runs no end-to-end test, may go without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "chromium not on PATH: the status page test renders the page in headless Chromium; install it with `apt-get install -y chromium` (Debian 12)"
	if testing.Short() {
		t.Skip(msg)
	}
	t.Fatal(msg)
	return ""
}

// dumpDOM loads url in headless Chromium and returns the DOM after the page has loaded.
func dumpDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--dump-dom", url)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
	}
	return stdout.String()
}

var (
	unseen = regexp.MustCompile(`(?s)<(style|title)\b.*?</(style|title)>`)
	tag    = regexp.MustCompile(`<[^>]*>`)
	space  = regexp.MustCompile(`\s+`)
)

// seen is the text of a piece of DOM as a person reads it: no markup, no style sheet or
// tooltip, entities decoded, runs of white space made one space.
func seen(dom string) string {
	s := tag.ReplaceAllString(unseen.ReplaceAllString(dom, " "), " ")
	return strings.TrimSpace(space.ReplaceAllString(html.UnescapeString(s), " "))
}

// element returns the DOM of the element with the given id (elements of its kind must not
// nest in it).
func element(t *testing.T, dom, kind, id string) string {
	t.Helper()
	i := strings.Index(dom, fmt.Sprintf(`<%s id="%s"`, kind, id))
	if i < 0 {
		t.Fatalf("the page has no <%s id=%q>:\n%s", kind, id, dom)
	}
	j := strings.Index(dom[i:], "</"+kind+">")
	if j < 0 {
		t.Fatalf("<%s id=%q> is not closed", kind, id)
	}
	return dom[i : i+j]
}

// TestStatusPageInBrowser opens the status page of a real controller in headless Chromium
// and reads it as a person would: a deployment scaled down by its policy, with its replica
// counts, the decision and its reason, the node, its fake GPUs and the instance on it.
func TestStatusPageInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const dep = "page-demo"
	dir := t.TempDir()
	cat := strings.ReplaceAll(repoFile(t, "examples/catalog-fake.yaml"), `"../bin/llmscaler"`, strconv.Quote(bin(t, "llmscaler")))
	catPath := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(catPath, []byte(cat), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, httpAddr := freePort(t), freePort(t)
	start(t, "controller", bin(t, "llmscaler-controller"), "--id", "ctl-1", "--data-dir", filepath.Join(dir, "c"), "--grpc-addr", addr,
		"--http-addr", httpAddr, "--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t), "--insecure")
	start(t, "agent", bin(t, "llmscaler-agent"), "--controller", addr, "--node-id", "gpu-node-1", "--gpu-backend", "fake",
		"--fake-gpus", "4", "--catalog", catPath, "--data-dir", filepath.Join(dir, "agent"), "--http-addr", "", "--insecure")
	t.Cleanup(func() { killServers(dep) })
	eventually(t, 30*time.Second, "gpu-node-1 connected", func() error {
		n, err := nodeOf(t, addr, "gpu-node-1")
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			return fmt.Errorf("state %v", n.GetState())
		}
		return nil
	})

	// Two replicas, then a minimum of one: the idle deployment is scaled down by the policy.
	apply := func(minReplicas int) {
		spec := fmt.Sprintf(`{"deployment":{"name":%q,"profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,
		  "min_replicas":%d,"max_replicas":4,"policy":{"threshold":{"cooldown":"60s"}}}}`, dep, minReplicas)
		if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
			t.Fatal(err)
		}
	}
	apply(2)
	waitReady(t, addr, dep, 2, 45*time.Second)
	apply(1)
	var down *llmscalerv1.Decision
	eventually(t, 30*time.Second, "a scale-down decision", func() error {
		for _, d := range acted(decisions(t, addr, dep)) {
			if d.GetToReplicas() < d.GetFromReplicas() {
				down = d
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	ready := waitReady(t, addr, dep, 1, 45*time.Second)

	dom := dumpDOM(t, chromium, "http://"+httpAddr+"/")
	page := seen(dom)
	row := seen(element(t, dom, "tr", "deployment-"+dep))
	node := seen(element(t, dom, "section", "node-gpu-node-1"))
	t.Logf("the page as read:\n%s", page)
	for _, c := range []struct{ where, text, want string }{
		{"page", page, "This controller is the leader"},
		{"page", page, "The history starts again when the lead changes."},
		{"deployment row", row, dep},
		{"deployment row", row, "desired 1 ready 1"},
		{"deployment row", row, "threshold"},
		{"deployment row", row, "1–4"},
		{"deployment row", row, "over the last 1h: desired"},
		{"page", page, fmt.Sprintf("%s %d → %d threshold %s", dep, down.GetFromReplicas(), down.GetToReplicas(), space.ReplaceAllString(down.GetReason(), " "))},
		{"node", node, "gpu-node-1 · CONNECTED"},
		{"node", node, "Fake GPU (simulated A100-SXM4-80GB) 80.0 GiB"},
		{"node", node, fmt.Sprintf("%s %s READY %s", ready[0].GetInstanceId(), dep, ready[0].GetEndpoint())},
	} {
		if !strings.Contains(c.text, c.want) {
			t.Errorf("the %s does not read %q; it reads:\n%s", c.where, c.want, c.text)
		}
	}
	if n := strings.Count(node, "Fake GPU"); n != 4 {
		t.Errorf("the node shows %d fake GPUs, want 4:\n%s", n, node)
	}
	if !regexp.MustCompile(`\d+ %`).MatchString(node) {
		t.Errorf("the node shows no GPU utilization:\n%s", node)
	}
	if !strings.Contains(dom, `<polyline class="ready"`) {
		t.Errorf("no replica chart on the page:\n%s", dom)
	}
}
