package statuspage

import (
	"strings"
	"testing"
	"time"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func leaderPage() *Page {
	return &Page{
		Controller: "c1", Version: "v1.2.3", Now: now,
		Leader: true, LeaderID: "c1", Epoch: 42, LeaderSince: now.Add(-30 * time.Minute),
		HistoryStep: 15 * time.Second, HistorySpan: time.Hour,
		Deployments: []Deployment{{
			Name: "llama", Profile: "fake-llm", Policy: "slo", PolicySettings: `{"target":"2s"}`, Min: 1, Max: 4,
			Live: true, Desired: 3, Replicas: map[string]uint32{"READY": 2, "STARTING": 1},
			History: []Point{
				{Time: now.Add(-2 * time.Hour), Desired: 9, Ready: 9}, // before the span: only its counts at the start show
				{Time: now.Add(-50 * time.Minute), Desired: 1, Ready: 1},
				{Time: now.Add(-10 * time.Minute), Desired: 3, Ready: 1},
				{Time: now, Desired: 3, Ready: 2},
			},
		}},
		Decisions: []Decision{
			{Time: now.Add(-10 * time.Minute), Deployment: "llama", Policy: "slo", From: 1, To: 3, Acted: true, Reason: "scale up 1 -> 3: TTFT p95 2.4s over target 2s"},
			{Time: now.Add(-20 * time.Minute), Deployment: "llama", Policy: "slo", From: 1, To: 1, Reason: "hold at 1: scale down 1 -> 0 recommended; held at min_replicas 1",
				Repeats: 12, Since: now.Add(-23 * time.Minute)},
		},
		Nodes: []Node{{
			ID: "gpu-node-1", State: "CONNECTED", Address: "10.0.0.7:53122", Backend: "fake", LastSeen: now.Add(-time.Second),
			GPUs: []GPU{
				{Index: 0, Name: "Fake GPU (simulated A100-SXM4-80GB)", MemoryMiB: 81920, Utilization: 37.4, HasUtilization: true, MemoryUsedMiB: 1000, HasMemoryUsed: true},
				{Index: 1, Name: "Fake GPU (simulated A100-SXM4-80GB)", MemoryMiB: 81920},
			},
			Instances: []Instance{
				{ID: "llama-a1b2", Deployment: "llama", Phase: "READY", Endpoint: "127.0.0.1:40001", GPUs: []uint32{0}},
				{ID: "llama-c3d4", Deployment: "llama", Phase: "STARTING", Endpoint: "127.0.0.1:40002", GPUs: []uint32{1}, Message: "loading weights"},
			},
		}},
	}
}

func render(t *testing.T, p *Page) string {
	t.Helper()
	var b strings.Builder
	if err := Render(&b, p); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRender(t *testing.T) {
	follower := leaderPage()
	follower.Leader, follower.LeaderID, follower.LeaderURL, follower.LeaderGRPC = false, "c2", "http://10.0.0.2:7401/", "10.0.0.2:7400"
	follower.Deployments[0].Live, follower.Deployments[0].History = false, nil
	follower.Nodes[0].Instances = nil
	noHTTP := leaderPage()
	noHTTP.Leader, noHTTP.LeaderID, noHTTP.LeaderGRPC = false, "c2", "10.0.0.2:7400"
	noLeader := leaderPage()
	noLeader.Leader, noLeader.LeaderID = false, ""
	empty := &Page{Controller: "c1", Now: now, Leader: true, HistorySpan: time.Hour, Problems: []string{"nodes: etcd: deadline exceeded"}}

	for _, tc := range []struct {
		name      string
		page      *Page
		want, not []string
	}{
		{name: "leader", page: leaderPage(), want: []string{
			`<meta http-equiv="refresh" content="5">`,
			"This controller is the leader, at epoch 42, since 11:30:00 UTC.",
			`<tr id="deployment-llama">`, "profile fake-llm", "desired 3<br>ready 2<br>STARTING 1",
			`<code>{&#34;target&#34;:&#34;2s&#34;}</code>`, "1–4",
			"over the last 1h: desired 1–9, ready 1–9", `<polyline class="ready"`, `<polyline class="desired"`,
			"every 15s and keeps the last 1h", "starts again when the lead changes",
			"1 → 3", "scale up 1 -&gt; 3: TTFT p95 2.4s over target 2s", "10m00s ago",
			"held at 1", "hold at 1: scale down 1 -&gt; 0 recommended; held at min_replicas 1", "×12 since 11:37:00",
			`<section id="node-gpu-node-1" class="node">`, "CONNECTED", "Fake GPU (simulated A100-SXM4-80GB)", "80.0 GiB", "37 %", "1000 MiB",
			"llama-a1b2", `class="phase READY">READY`, "127.0.0.1:40001", `class="phase STARTING">STARTING`, "loading weights",
		}, not: []string{"is a follower", "<script"}},
		{name: "follower with the leader's page known", page: follower, want: []string{
			"This controller is a follower; the leader is <b>c2</b> (<a href=\"http://10.0.0.2:7401/\">its status page</a>)",
			"kept by the leader only", "on the leader", "Node records as stored in etcd",
		}, not: []string{"<polyline", "No instance.", "10.0.0.2:7400", "seen "}},
		{name: "follower with only the leader's gRPC address", page: noHTTP, want: []string{
			"This controller is a follower; the leader is <b>c2</b> (gRPC 10.0.0.2:7400)",
		}, not: []string{"<a href"}},
		{name: "no leader", page: noLeader, want: []string{"No leader is elected yet"}},
		{name: "empty", page: empty, want: []string{
			"No deployment.", "No decision journaled yet.", "No node.", `<p class="problem">nodes: etcd: deadline exceeded</p>`,
		}, not: []string{"<table"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := render(t, tc.page)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("page lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("page has %q:\n%s", n, out)
				}
			}
		})
	}
}

// TestRenderEscapes feeds hostile text into every kind of place the page puts text: element
// content, attributes (ids, classes, the SVG label), and the leader link.
func TestRenderEscapes(t *testing.T) {
	const evil = `<script>alert("x")</script>`
	p := leaderPage()
	p.Controller = evil
	p.Problems = []string{evil}
	d := &p.Deployments[0]
	d.Name, d.Profile, d.PolicySettings, d.Message = evil, evil, evil, evil
	d.Replicas[evil] = 1
	p.Decisions[0].Deployment, p.Decisions[0].Reason = evil, evil
	n := &p.Nodes[0]
	n.ID, n.Address, n.CordonReason, n.Cordoned = `"><script>alert(1)</script>`, evil, evil, true
	n.GPUs[0].Name = evil
	in := &n.Instances[0]
	in.ID, in.Deployment, in.Phase, in.Endpoint, in.Message = evil, evil, `READY" onclick="alert(1)`, evil, evil
	out := render(t, p)
	for _, bad := range []string{"<script", `" onclick="`} {
		if strings.Contains(out, bad) {
			t.Errorf("hostile text %q reached the page unescaped:\n%s", bad, out)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", `id="node-&#34;&gt;&lt;script&gt;`} {
		if !strings.Contains(out, want) {
			t.Errorf("escaped text %q missing:\n%s", want, out)
		}
	}

	f := leaderPage()
	f.Leader, f.LeaderID, f.LeaderURL = false, "c2", `javascript:alert(1)`
	if out := render(t, f); strings.Contains(out, "javascript:") {
		t.Errorf("a javascript: leader link reached the page:\n%s", out)
	}
}

func TestChart(t *testing.T) {
	p := leaderPage()
	for _, tc := range []struct {
		name          string
		history       []Point
		desired, read string
		summary       string
	}{
		{name: "none", summary: "no history yet"},
		{name: "one point now", history: []Point{{Time: now, Desired: 2, Ready: 1}},
			desired: "240.0,3.0", read: "240.0,24.0", summary: "over the last 1h: desired 2, ready 1"},
		{name: "steps hold until the next point", history: []Point{{Time: now.Add(-time.Hour), Desired: 1, Ready: 0}, {Time: now.Add(-30 * time.Minute), Desired: 2, Ready: 2}},
			desired: "0.0,24.0 120.0,24.0 120.0,3.0", read: "0.0,45.0 120.0,45.0 120.0,3.0", summary: "over the last 1h: desired 1–2, ready 0–2"},
		{name: "older points are clipped to the span", history: []Point{{Time: now.Add(-3 * time.Hour), Desired: 5}, {Time: now.Add(-2 * time.Hour), Desired: 1}, {Time: now, Desired: 1}},
			desired: "0.0,3.0 240.0,3.0 240.0,3.0", read: "0.0,45.0 240.0,45.0 240.0,45.0", summary: "over the last 1h: desired 1, ready 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.Chart(Deployment{History: tc.history})
			if c.Desired != tc.desired || c.Ready != tc.read || c.Summary != tc.summary {
				t.Errorf("chart = desired %q ready %q summary %q, want %q %q %q", c.Desired, c.Ready, c.Summary, tc.desired, tc.read, tc.summary)
			}
		})
	}
}
