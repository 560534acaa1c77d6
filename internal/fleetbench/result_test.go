package fleetbench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestWriteTextSaysWhatIsMissingAndWhatFailed(t *testing.T) {
	r := &Result{
		Params:     Params{Agents: 10, GPUs: 8, Instances: 2, Storm: true, IntervalS: 1},
		Connect:    ConnectResult{Mode: "storm", AllConnected: true, Seconds: 1.5, Dials: 12, Retries: 2},
		Steady:     SteadyResult{WindowS: 30, ReportsPerSecond: 10, IngestP99Ms: ptr(12.5)},
		Leadership: LeadershipResult{LeaderBefore: "c0", LeaderAfter: "c1", EpochBefore: 2, EpochAfter: 3, Changes: 1},
		Failover:   &FailoverResult{Killed: "c0", NewLeader: "c1", LeadS: ptr(3.2)},
		Admin:      []AdminResult{{Method: "ListNodes", Calls: 20, MaxReplyBytes: 5 << 20}},
		Outcome:    Outcome{Failures: []string{"admin ListNodes replied too much"}},
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"10 agents x 8 GPUs", "storm", "1.5 s after the first dial", "12 dials (2 retries)",
		"ingest p50 n/a p99 12.5 ms", "LOST: c0 epoch 2 before, c1 epoch 3 after",
		"c1 leads (epoch 0) after 3.20 s", "first command after never", "ListNodes", "false",
		"FAILED: admin ListNodes replied too much",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "decisions") || strings.Contains(out, "final") {
		t.Errorf("table shows sections that were not measured:\n%s", out)
	}
	if r.Failed() == nil {
		t.Error("a result with failures did not fail")
	}
}

func TestResultJSONNamesAreSnakeCase(t *testing.T) {
	b, err := json.Marshal(&Result{Steady: SteadyResult{ReportsPerSecond: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"reports_per_second":1`, `"ingest_p50_ms":null`, `"desired_changes":0`, `"held":false`, `"all_connected":false`, `"peak_rss_mib"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}
