//go:build linux

package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// dashboard is the part of a Grafana dashboard model the tests read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

// query is the variable's PromQL: Grafana stores it as a string or as {"query": "..."}.
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &q)
	return q.Query
}

// promDS is the datasource every query must use: the dashboard's ${datasource} variable,
// so that an import picks the Prometheus instance instead of a uid from our Grafana.
var promDS = datasource{Type: "prometheus", UID: "${datasource}"}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/llmscaler.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("llmscaler.json is not valid JSON: %v", err)
	}
	return d
}

// exprs lists every PromQL expression of the dashboard with where it is.
func (d dashboard) exprs() map[string]string {
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out["variable "+v.Name] = v.query()
		}
	}
	return out
}

// grafanaBuiltins are the variables Grafana defines itself.
var grafanaBuiltins = []string{"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms", "__all"}

var varRef = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// TestDashboardWellFormed checks what Grafana needs to import the dashboard and show every
// panel: valid JSON, the datasource, deployment and node variables, a title and the
// ${datasource} datasource on every panel and query, only defined variables, and panels that
// neither overlap nor leave the 24-column grid.
func TestDashboardWellFormed(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: both are needed for a stable import", d.Title, d.UID)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want about 39 (Grafana 10 to 11)", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds := vars["datasource"]; ds.Type != "datasource" || ds.query() != "prometheus" {
		t.Errorf("datasource variable: type %q query %q, want a Prometheus datasource variable", ds.Type, ds.query())
	}
	for _, name := range []string{"deployment", "node"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" || v.Datasource == nil || *v.Datasource != promDS || !strings.Contains(v.query(), name) {
			t.Errorf("variable %s: %+v, want a query variable over ${datasource} on label %s", name, v, name)
		}
	}

	ids := map[int]bool{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Fatalf("panel %q overlaps panel %q at (%d, %d)", p.Title, other, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || *p.Datasource != promDS {
			t.Errorf("panel %q: datasource %v, want %v", p.Title, p.Datasource, promDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || *tg.Datasource != promDS || tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q target %q: datasource %v, expr %q: want %v, an expr and a unique refId", p.Title, tg.RefID, tg.Datasource, tg.Expr, promDS)
			}
			refs[tg.RefID] = true
		}
	}

	for where, expr := range d.exprs() {
		if err := balanced(expr); err != nil {
			t.Errorf("%s: %v in %s", where, err, expr)
		}
		for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
			name := m[1] + m[2]
			if _, ok := vars[name]; !ok && !slices.Contains(grafanaBuiltins, name) {
				t.Errorf("%s: $%s is not a dashboard variable", where, name)
			}
		}
		if len(selectors(expr)) == 0 {
			t.Errorf("%s: no llmscaler metric in %s", where, expr)
		}
	}
}

// balanced reports unbalanced brackets outside string literals.
func balanced(expr string) error {
	var stack []byte
	closing := map[byte]byte{')': '(', ']': '[', '}': '{'}
	for i := 0; i < len(expr); i++ {
		switch c := expr[i]; c {
		case '"', '\'', '`':
			i = skipString(expr, i)
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != closing[c] {
				return fmt.Errorf("unbalanced %q at %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("unclosed %q", stack)
	}
	return nil
}

// metricPrefixes are the metric names the dashboard may use: the daemons' own and the Go
// client's process and runtime collectors.
var metricPrefixes = []string{"llmscaler_", "process_", "go_"}

// selector is one metric name in an expression and the label names its braces match on.
type selector struct {
	metric string
	labels []string
}

// selectors tokenizes PromQL just enough to find metric names and their selectors' label
// names: identifiers with one of metricPrefixes, outside string literals, comments and
// Grafana $variables. A full PromQL parser would bring in all of Prometheus.
func selectors(expr string) []selector {
	var out []selector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i) + 1
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				for i < len(expr) && expr[i] != '}' {
					i++
				}
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case isIdent(c) && (c < '0' || c > '9'):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			name := expr[i:j]
			i = j
			if !slices.ContainsFunc(metricPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
				continue
			}
			s := selector{metric: name}
			for i < len(expr) && expr[i] == ' ' {
				i++
			}
			if i < len(expr) && expr[i] == '{' {
				s.labels, i = matcherLabels(expr, i+1)
			}
			out = append(out, s)
		default:
			i++
		}
	}
	return out
}

// matcherLabels reads the label names of the matchers after a '{' at i, and returns them and
// the index after the closing '}'.
func matcherLabels(expr string, i int) ([]string, int) {
	var labels []string
	for i < len(expr) && expr[i] != '}' {
		switch c := expr[i]; {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i) + 1
		case isIdent(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			labels = append(labels, expr[i:j])
			i = j
		default:
			i++
		}
	}
	return labels, i + 1
}

func isIdent(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// skipString returns the index of the quote that closes the string literal opening at i, or
// the end of expr.
func skipString(expr string, i int) int {
	q := expr[i]
	for i++; i < len(expr) && expr[i] != q; i++ {
		if expr[i] == '\\' && q != '`' {
			i++
		}
	}
	return i
}

func TestSelectors(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		want       []selector
	}{
		{"plain", `llmscaler_a`, []selector{{metric: "llmscaler_a"}}},
		{"matchers", `sum by (deployment) (rate(llmscaler_a_total{deployment=~"$deployment", code!~"2.."}[$__rate_interval]))`,
			[]selector{{"llmscaler_a_total", []string{"deployment", "code"}}}},
		{"strings are not names", `llmscaler_a{job="llmscaler_b", x='llmscaler_c\'d'} or llmscaler_e`,
			[]selector{{"llmscaler_a", []string{"job", "x"}}, {metric: "llmscaler_e"}}},
		{"variables are not names", `llmscaler_a{node=~"$node"} * $llmscaler_x * ${llmscaler_y}`,
			[]selector{{"llmscaler_a", []string{"node"}}}},
		{"comments", "llmscaler_a # llmscaler_b\n+ process_open_fds", []selector{{metric: "llmscaler_a"}, {metric: "process_open_fds"}}},
		{"other names", `up + node_load1 + rate(llmscaler_h_bucket[5m])`, []selector{{metric: "llmscaler_h_bucket"}}},
		{"label_values", `label_values(llmscaler_a, deployment)`, []selector{{metric: "llmscaler_a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := selectors(tc.expr)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("selectors(%s) = %v, want %v", tc.expr, got, tc.want)
			}
		})
	}
}

// targetLabels are the labels Prometheus adds to every scraped series (job, instance) and
// the one prometheus.yml adds to the agents' (node).
var targetLabels = []string{"job", "instance", "node"}

// TestDashboardMetricsExposed starts a controller with its embedded etcd, an agent with fake
// GPUs running one fakeserver replica, and a router; sends a request through the router;
// and checks that every metric the dashboard queries is on one of their /metrics, with the
// labels its selectors match on. Series of labelled metrics only appear once something has
// happened to them, hence the traffic.
func TestDashboardMetricsExposed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a controller, an agent and a router")
	}
	bins := binDir(t)
	dir := t.TempDir()
	grpcAddr, httpAddrs := freePort(t), map[string]string{
		"llmscaler-controller": freePort(t), "llmscaler-agent": freePort(t), "llmscaler-router": freePort(t),
	}
	startDaemon(t, "llmscaler-controller", "--data-dir", filepath.Join(dir, "controller"), "--grpc-addr", grpcAddr,
		"--http-addr", httpAddrs["llmscaler-controller"], "--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t), "--insecure")

	dep := fmt.Sprintf("dashboard-%d", os.Getpid())
	catalog, err := os.ReadFile("../examples/catalog-fake.yaml")
	if err != nil {
		t.Fatal(err)
	}
	catPath := filepath.Join(dir, "catalog.yaml")
	catalog = []byte(strings.ReplaceAll(string(catalog), `"../bin/llmscaler"`, strconv.Quote(filepath.Join(bins, "llmscaler"))))
	if err := os.WriteFile(catPath, catalog, 0o600); err != nil {
		t.Fatal(err)
	}
	// Model servers outlive their agent by design. This cleanup runs after the agent's
	// (cleanups run last first), so no agent is left to restart a server it kills.
	t.Cleanup(func() { killServers(dep) })
	startDaemon(t, "llmscaler-agent", "--controller", grpcAddr, "--node-id", "n1", "--gpu-backend", "fake", "--fake-gpus", "2",
		"--catalog", catPath, "--data-dir", filepath.Join(dir, "agent"), "--http-addr", httpAddrs["llmscaler-agent"], "--insecure")
	startDaemon(t, "llmscaler-router", "--controller", grpcAddr, "--listen", httpAddrs["llmscaler-router"], "--report-interval", "500ms", "--insecure")

	conn, err := grpc.NewClient(grpcAddr, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := llmscalerv1.NewAdminServiceClient(conn)
	waitFor(t, 30*time.Second, "apply deployment "+dep, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := admin.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: &llmscalerv1.DeploymentSpec{
			Name: dep, Profile: "fake-llm", GpusPerReplica: 1, GpuMemoryMib: 1000, MinReplicas: 0, MaxReplicas: 2,
			IdleToZero: durationpb.New(10 * time.Minute), ColdStartWait: durationpb.New(time.Minute),
		}})
		return err
	})
	client := &http.Client{Timeout: 70 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	// At zero replicas the first request makes the controller decide a scale-up, and waits
	// in the router's queue for the cold start.
	waitFor(t, 60*time.Second, "a completion through the router", func() error {
		resp, err := client.Post("http://"+httpAddrs["llmscaler-router"]+"/v1/completions", "application/json",
			strings.NewReader(fmt.Sprintf(`{"model":%q,"prompt":"hello","max_tokens":4}`, dep)))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	want := map[string][]string{} // metric -> label names its selectors use
	for _, expr := range readDashboard(t).exprs() {
		for _, s := range selectors(expr) {
			want[s.metric] = append(want[s.metric], s.labels...)
		}
	}
	var exposed map[string]exposedSeries
	waitFor(t, 30*time.Second, "every dashboard metric exposed", func() error {
		exposed = map[string]exposedSeries{}
		for daemon, addr := range httpAddrs {
			if err := scrape(client, daemon, "http://"+addr+"/metrics", exposed); err != nil {
				return err
			}
		}
		var missing []string
		for m := range want {
			if _, ok := exposed[m]; !ok {
				missing = append(missing, m)
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("not on any daemon's /metrics: %s", strings.Join(missing, ", "))
		}
		return nil
	})
	for m, labels := range want {
		for _, l := range labels {
			if !exposed[m].labels[l] && !slices.Contains(targetLabels, l) {
				t.Errorf("%s (from %s) has no label %q; it has %v", m, exposed[m].daemon, l, keys(exposed[m].labels))
			}
		}
	}
}

// exposedSeries is what one scraped series name carries.
type exposedSeries struct {
	daemon string
	labels map[string]bool
}

// scrape adds the series names on one /metrics page to into: a histogram's under its
// _bucket, _sum and _count names (and le), as PromQL sees them.
func scrape(client *http.Client, daemon, url string, into map[string]exposedSeries) error {
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("%s: %w", daemon, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: GET /metrics: %s", daemon, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return fmt.Errorf("%s /metrics: %w", daemon, err)
	}
	for name, f := range fams {
		names := []string{name}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = []string{name + "_bucket", name + "_sum", name + "_count"}
		case dto.MetricType_SUMMARY:
			names = append(names, name+"_sum", name+"_count")
		}
		for _, n := range names {
			s, ok := into[n] // process_* come from more than one daemon
			if !ok {
				s = exposedSeries{daemon: daemon, labels: map[string]bool{}}
				into[n] = s
			}
			if n == name+"_bucket" {
				s.labels["le"] = true
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					s.labels[l.GetName()] = true
				}
			}
		}
	}
	return nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// killServers kills the fakeserver processes of deployment dep, found by their command line.
func killServers(dep string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(b), "\x00fakeserver\x00") && strings.Contains(string(b), "\x00--model\x00"+dep+"\x00") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
