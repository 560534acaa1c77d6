package controller

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestReplicaHistoryIsBounded(t *testing.T) {
	h := newReplicaHistory(15*time.Second, time.Minute) // 4 points
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 6 {
		h.record(map[string]historyPoint{
			"a": {at: t0.Add(time.Duration(i) * 15 * time.Second), desired: uint32(i), ready: uint32(i)},
			"b": {at: t0, desired: 7},
		})
	}
	var got []uint32
	for _, p := range h.points("a") {
		got = append(got, p.desired)
	}
	if want := []uint32{2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("history of a = %v, want the last 4, oldest first: %v", got, want)
	}
	h.record(map[string]historyPoint{"a": {at: t0.Add(2 * time.Minute), desired: 9}})
	if pts := h.points("b"); pts != nil {
		t.Errorf("a deleted deployment keeps its history: %v", pts)
	}
	if pts := h.points("a"); len(pts) != 4 || pts[0].desired != 3 || pts[3].desired != 9 {
		t.Errorf("history of a after one more point: %v", pts)
	}
}

func getPage(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestStatusPage reads the status page of a leader and of its follower: the leader shows its
// live view, the follower what etcd holds and where the leader's page is; neither accepts
// anything but GET and HEAD.
func TestStatusPage(t *testing.T) {
	ep := startEtcd(t)
	cfg := testConfig(ep)
	cfg.ID = "c1"
	a := startController(t, cfg)
	waitLeader(t, a)
	cfg.ID = "c2"
	b := startController(t, cfg)
	waitFollowing(t, a, b)

	// An agent whose second GPU has a hostile name, running one instance of "chat".
	h := hello("n1", "run-1", 2)
	h.GetHello().Gpus[1].Name = `<script>alert(1)</script>`
	ag, _, err := connect(t, a.GRPCAddr(), h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin(t, a).ApplyDeployment(ctxT(t), &llmscalerv1.ApplyDeploymentRequest{Deployment: &llmscalerv1.DeploymentSpec{
		Name: "chat", Profile: "fake-llm", GpusPerReplica: 1, MinReplicas: 1, MaxReplicas: 3,
		Policy: &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Threshold{Threshold: &llmscalerv1.ThresholdPolicy{}}},
	}}); err != nil {
		t.Fatal(err)
	}
	util := 37.0
	if err := ag.stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: &llmscalerv1.Report{
		Seq: 1, Time: timestamppb.Now(),
		Gpus: []*llmscalerv1.GpuSample{{Index: 0, UtilizationPercent: &util}},
		Instances: []*llmscalerv1.InstanceStatus{{InstanceId: "chat-1", Deployment: "chat", Profile: "fake-llm",
			Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, GpuIndices: []uint32{0}, Endpoint: "127.0.0.1:9"}},
	}}}); err != nil {
		t.Fatal(err)
	}

	leaderURL := "http://" + a.HTTPAddr() + "/"
	var page string
	waitFor(t, 10*time.Second, "the leader's page to show the instance", func() bool {
		_, page = getPage(t, http.MethodGet, leaderURL)
		return strings.Contains(page, "chat-1")
	})
	for _, want := range []string{
		"This controller is the leader", `<tr id="deployment-chat">`, "desired 1<br>ready 1", "threshold", "1–3",
		`id="node-n1"`, "CONNECTED", "Fake GPU", "80.0 GiB", "37 %", `class="phase READY">READY`, "127.0.0.1:9",
		"&lt;script&gt;alert(1)&lt;/script&gt;", "<polyline class=\"ready\"",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("leader's page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<script") {
		t.Errorf("leader's page carries a hostile GPU name unescaped:\n%s", page)
	}

	waitFor(t, 10*time.Second, "the follower's page to show the stored node", func() bool {
		_, page = getPage(t, http.MethodGet, "http://"+b.HTTPAddr()+"/")
		return strings.Contains(page, `id="node-n1"`)
	})
	for _, want := range []string{
		`This controller is a follower; the leader is <b>c1</b> (<a href="` + leaderURL + `">its status page</a>)`,
		`<tr id="deployment-chat">`, "on the leader", "Node records as stored in etcd", "Fake GPU",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("follower's page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "chat-1") {
		t.Errorf("follower's page shows an instance, which only the leader knows:\n%s", page)
	}

	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodHead, "/", http.StatusOK},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodPut, "/", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nothing-here", http.StatusNotFound},
	} {
		resp, body := getPage(t, tc.method, "http://"+a.HTTPAddr()+tc.path)
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
		if tc.code == http.StatusMethodNotAllowed && !strings.Contains(resp.Header.Get("Allow"), "GET") {
			t.Errorf("%s %s: Allow %q", tc.method, tc.path, resp.Header.Get("Allow"))
		}
		if tc.method == http.MethodHead && (body != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html")) {
			t.Errorf("HEAD: content type %q, body %q", resp.Header.Get("Content-Type"), body)
		}
	}
}

func TestStatusURL(t *testing.T) {
	for _, tc := range []struct{ http, grpc, want string }{
		{"127.0.0.1:7401", "127.0.0.1:7400", "http://127.0.0.1:7401/"},
		{"0.0.0.0:7401", "ctl-2.example:7400", "http://ctl-2.example:7401/"},
		{"[::]:7401", "[fd00::2]:7400", "http://[fd00::2]:7401/"},
		{"", "10.0.0.2:7400", ""},
	} {
		if got := statusURL(&llmscalerv1.ControllerInfo{HttpAddress: tc.http, GrpcAddress: tc.grpc}); got != tc.want {
			t.Errorf("statusURL(%q, %q) = %q, want %q", tc.http, tc.grpc, got, tc.want)
		}
	}
}

func TestStatusDecisionRuns(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	d := func(sec int, from, to uint32, acted bool, reason string) *llmscalerv1.Decision {
		return &llmscalerv1.Decision{Time: timestamppb.New(t0.Add(time.Duration(sec) * time.Second)), Deployment: "chat",
			FromReplicas: from, ToReplicas: to, Recommended: to, Acted: acted, Reason: reason}
	}
	// Newest first, as ListDecisions answers.
	rows := statusDecisionRuns([]*llmscalerv1.Decision{
		d(9, 2, 2, false, "hold at 2, third"), d(8, 2, 2, false, "hold at 2, second"), d(7, 2, 2, false, "hold at 2, first"),
		d(5, 1, 2, true, "scale 1 -> 2"),
		d(3, 2, 2, false, "an older hold"),
	})
	type row struct {
		reason  string
		repeats int
		since   int
	}
	var got []row
	for _, r := range rows {
		got = append(got, row{r.Reason, r.Repeats, int(r.Since.Sub(t0) / time.Second)})
	}
	want := []row{{"hold at 2, third", 3, 7}, {"scale 1 -> 2", 1, 5}, {"an older hold", 1, 3}}
	if !slices.Equal(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}

	var many []*llmscalerv1.Decision
	for i := range 2 * statusDecisionRows {
		many = append(many, d(-i, uint32(i%2+1), uint32(i%2+2), true, "flap"))
	}
	if n := len(statusDecisionRuns(many)); n != statusDecisionRows {
		t.Errorf("%d rows, want at most %d", n, statusDecisionRows)
	}
}
