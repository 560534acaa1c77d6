//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// runFails runs a binary that must refuse to start, and returns what it printed.
func runFails(t *testing.T, path string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("%s %s: %v, want exit status 1\n%s", filepath.Base(path), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSecurity runs a fleet with mutual TLS from `llmscaler certs`, as the README's by-hand
// section does, and has real grpcurl try what each identity may and may not: every refusal
// with its status and message, and nothing changed by it.
func TestSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	tls := certs(t, "n1")
	// A second run refuses to replace the set.
	out, err := exec.Command(bin(t, "llmscaler"), "certs", "--out", tls, "--nodes", "n1").CombinedOutput()
	if want := "llmscaler: " + filepath.Join(tls, "ca.crt") + " exists; pass --force to overwrite the whole set\n"; err == nil || string(out) != want {
		t.Errorf("llmscaler certs over a set: %v\n%s\nwant: %s", err, out, want)
	}

	dir := t.TempDir()
	addr, listen := freePort(t), freePort(t)
	ctl := []string{"--data-dir", filepath.Join(dir, "c"), "--grpc-addr", addr, "--http-addr", "-",
		"--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t)}

	// Daemons without a choice of transport security, or plaintext off loopback, do not start.
	if out := runFails(t, bin(t, "llmscaler-controller"), ctl...); !strings.Contains(out,
		"llmscaler-controller: no transport security chosen: pass --tls-ca, --tls-cert and --tls-key for mutual TLS (`llmscaler certs` makes a development set), or --insecure for plaintext on loopback") {
		t.Errorf("controller without TLS flags:\n%s", out)
	}
	if out := runFails(t, bin(t, "llmscaler-router"), "--controller", "10.0.0.5:7400", "--listen", listen, "--insecure"); !strings.Contains(out,
		"llmscaler-router: --insecure: plaintext is allowed on loopback only, and --controller 10.0.0.5:7400 is not; use mutual TLS, or add --insecure-allow-remote on a trusted network") {
		t.Errorf("router plaintext to a remote controller:\n%s", out)
	}
	agent := func(node, cert string) []string {
		return append([]string{"--controller", addr, "--node-id", node, "--gpu-backend", "fake", "--fake-gpus", "2",
			"--data-dir", filepath.Join(dir, node), "--http-addr", ""}, tlsArgs(tls, cert, "--")...)
	}
	if out := runFails(t, bin(t, "llmscaler-agent"), agent("n2", "node-n1")...); !strings.Contains(out,
		"llmscaler-agent: --tls-cert: the certificate is node/n1's (spiffe://llmscaler/node/n1), not node n2's") {
		t.Errorf("agent n2 with n1's certificate:\n%s", out)
	}

	start(t, "controller", bin(t, "llmscaler-controller"), append(ctl, tlsArgs(tls, "controller", "--")...)...)
	start(t, "agent", bin(t, "llmscaler-agent"), agent("n1", "node-n1")...)
	start(t, "router", bin(t, "llmscaler-router"), append([]string{"--controller", addr, "--listen", listen}, tlsArgs(tls, "router", "--")...)...)
	useTLS(t, addr, tls, "admin")
	eventually(t, 30*time.Second, "n1 connected over mutual TLS", func() error {
		n, err := nodeOf(t, addr, "n1")
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			return fmt.Errorf("n1 %v", n.GetState())
		}
		return nil
	})
	deployments := func() []string {
		var r llmscalerv1.ListDeploymentsResponse
		if err := call(t, addr, "ListDeployments", "", &r); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range r.GetDeployments() {
			names = append(names, d.GetSpec().GetName())
		}
		return names
	}
	spec := `{"deployment":{"name":"sec","profile":"none","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":0,"max_replicas":2}}`

	// grpcurl prints a refused call's status on stderr as "Code: ...\nMessage: ...".
	refused := func(what string, err error, code, msg string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "Code: "+code+"\n") || !strings.Contains(err.Error(), "Message: "+msg+"\n") {
			t.Errorf("%s: %v\nwant Code: %s, Message: %s", what, err, code, msg)
		}
	}
	_, err = grpcurlWith(t, tlsArgs(tls, "readonly", "-"), "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment")
	refused("readonly applies", err, "PermissionDenied", "readonly may not call llmscaler.v1.AdminService/ApplyDeployment: it needs admin")
	if _, err := grpcurlWith(t, tlsArgs(tls, "readonly", "-"), addr, "llmscaler.v1.AdminService/ListNodes"); err != nil {
		t.Errorf("readonly lists nodes: %v", err)
	}
	_, err = grpcurlWith(t, tlsArgs(tls, "node-n1", "-"), addr, "llmscaler.v1.AdminService/ListNodes")
	refused("a node reads the admin API", err, "PermissionDenied", "node/n1 may not call llmscaler.v1.AdminService/ListNodes: it needs admin or readonly")

	// Clients the handshake refuses: another set's CA, plaintext on the TLS port.
	other := certs(t)
	_, err = grpcurlWith(t, tlsArgs(other, "admin", "-"), "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment")
	if err == nil || !strings.Contains(err.Error(), "Failed to dial target host") || !strings.Contains(err.Error(), "tls: ") {
		t.Errorf("admin of another CA: %v, want a failed TLS handshake", err)
	}
	_, err = grpcurlWith(t, []string{"-plaintext"}, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment")
	if err == nil || !strings.Contains(err.Error(), "Failed to dial target host") {
		t.Errorf("plaintext on the TLS port: %v, want a failed dial", err)
	}
	if names := deployments(); len(names) != 0 {
		t.Fatalf("deployments %v after the refusals, want none", names)
	}

	// Admin may; the router, on its own certificate, follows.
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	if _, err := grpcurl(t, "-d", `{"name":"sec","replicas":1,"autoscaling":"AUTOSCALING_ACTION_PAUSE"}`, addr, "llmscaler.v1.AdminService/ScaleDeployment"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the router's table over mutual TLS", func() error {
		resp, err := http.Get("http://" + listen + "/v1/models")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"sec"`) {
			return fmt.Errorf("/v1/models: %s", b)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the scale by hand journaled with its actor", func() error {
		for _, d := range decisions(t, addr, "sec") {
			if d.GetActor() == "admin" && d.GetReason() == "scaled by hand by admin: held at 1 replica, autoscaling paused" {
				return nil
			}
		}
		return fmt.Errorf("decisions: %v", decisions(t, addr, "sec"))
	})
	var got llmscalerv1.GetDeploymentResponse
	if err := call(t, addr, "GetDeployment", `{"name":"sec"}`, &got); err != nil {
		t.Fatal(err)
	}
	if by := got.GetDeployment().GetUpdatedBy(); by != "admin" {
		t.Errorf("updated_by %q, want admin", by)
	}
	// The load generator lists the instances over mutual TLS: readonly may, a node may not, and
	// without a choice it does not start.
	loadArgs := []string{"load", "--controller", addr, "--deployment", "sec", "--rps", "1", "--duration", "1s", "--progress-interval", "0"}
	if out, err := exec.Command(bin(t, "llmscaler"), append(loadArgs, tlsArgs(tls, "readonly", "--")...)...).CombinedOutput(); err != nil {
		t.Errorf("load as readonly: %v\n%s", err, out)
	}
	if out := runFails(t, bin(t, "llmscaler"), append(loadArgs, tlsArgs(tls, "node-n1", "--")...)...); !strings.Contains(out,
		"PermissionDenied desc = node/n1 may not call llmscaler.v1.AdminService/ListInstances: it needs admin or readonly") {
		t.Errorf("load as node/n1:\n%s", out)
	}
	if out := runFails(t, bin(t, "llmscaler"), loadArgs...); !strings.Contains(out, "llmscaler: no transport security chosen") {
		t.Errorf("load without TLS flags:\n%s", out)
	}
}
