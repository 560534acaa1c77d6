package controller

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmscaler/llmscaler/internal/policy"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// FuzzValidateDeploymentSpec decodes arbitrary bytes as an ApplyDeploymentRequest, in
// protojson and in the binary wire format, and as a ScaleDeploymentRequest, and runs the
// checks the admin handlers run before writing anything. They must never panic and must
// give the same answer twice; a refusal must name its field the way the handler reports
// it; a spec they accept must hold the documented bounds (checked here without the
// validator's own code), survive its JSON and binary forms, and build an autoscaler whose
// first decision stays within min and max replicas. The seed corpus in
// testdata/fuzz/FuzzValidateDeploymentSpec holds the example deployment, the specs the
// admin tests refuse, and wire-level oddities (unknown fields, bad UTF-8, huge numbers).
func FuzzValidateDeploymentSpec(f *testing.F) {
	for _, s := range []string{
		`{"deployment":{"name":"fake","profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":2,"max_replicas":4,"policy":{"slo":{"scale_down_delay":"10s"},"stable_window":"10s"}}}`,
		`{"deployment":{"name":"llama-8b","profile":"vllm-llama-8b","gpusPerReplica":1,"gpuMemoryMib":"20000","minReplicas":5,"maxReplicas":3}}`,
		`{"deployment":{"name":"d","profile":"p","max_replicas":1,"policy":{"target":{}}}}`,
		`{"deployment":{"name":"d","profile":"p","max_replicas":1,"policy":{"slo":{"percentile":100}}}}`,
		`{"deployment":{"name":"d","profile":"p","max_replicas":1,"served_models":["m","m"],"idle_to_zero":"-1s"}}`,
		`{"name":"replicas","replicas":3,"autoscaling":"AUTOSCALING_ACTION_PAUSE"}`,
	} {
		f.Add([]byte(s))
	}
	good, err := proto.Marshal(&llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		var fromJSON, fromWire llmscalerv1.ApplyDeploymentRequest
		if protojson.Unmarshal(data, &fromJSON) == nil {
			checkApply(t, &fromJSON)
		}
		if proto.Unmarshal(data, &fromWire) == nil {
			checkApply(t, &fromWire)
		}
		var scale llmscalerv1.ScaleDeploymentRequest
		if protojson.Unmarshal(data, &scale) == nil || proto.Unmarshal(data, &scale) == nil {
			spec := goodSpec()
			if fromWire.GetDeployment() != nil && validateApply(&fromWire) == nil {
				spec = fromWire.GetDeployment()
			}
			checkScale(t, &scale, spec)
		}
	})
}

// validateApply runs the checks ApplyDeployment runs, in its order.
func validateApply(r *llmscalerv1.ApplyDeploymentRequest) *fieldError {
	if fe := checkRequestSize(r); fe != nil {
		return fe
	}
	if len(r.ProtoReflect().GetUnknown()) > 0 {
		return badField("request", "has fields this controller does not know")
	}
	return validateDeploymentSpec(r.GetDeployment())
}

func checkApply(t *testing.T, r *llmscalerv1.ApplyDeploymentRequest) {
	t.Helper()
	fe := validateApply(r)
	if again := validateApply(proto.Clone(r).(*llmscalerv1.ApplyDeploymentRequest)); errText(fe) != errText(again) {
		t.Fatalf("validation is not deterministic: %q, then %q", errText(fe), errText(again))
	}
	if fe != nil {
		checkRefusal(t, fe)
		return
	}
	checkValidSpec(t, r)
}

// checkRefusal checks that a refusal reads as the handler sends it: InvalidArgument, the
// message starting with the field, and a BadRequest detail naming that field alone.
func checkRefusal(t *testing.T, fe *fieldError) {
	t.Helper()
	if !strings.HasPrefix(fe.field, "deployment") && fe.field != "request" {
		t.Fatalf("refusal names field %q, not one of the request's", fe.field)
	}
	st := status.Convert(fe.grpcStatus())
	if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), fe.field+": ") {
		t.Fatalf("refusal is %v %q, want InvalidArgument starting with %q", st.Code(), st.Message(), fe.field+": ")
	}
	details := st.Details()
	if len(details) != 1 {
		t.Fatalf("refusal has %d details, want one BadRequest", len(details))
	}
	br, ok := details[0].(*errdetails.BadRequest)
	if !ok || len(br.GetFieldViolations()) != 1 || br.GetFieldViolations()[0].GetField() != fe.field {
		t.Fatalf("refusal detail %v, want a BadRequest naming %q", details[0], fe.field)
	}
}

// checkValidSpec checks the documented bounds of an accepted spec, each from the rule as
// written rather than the validator's code.
func checkValidSpec(t *testing.T, r *llmscalerv1.ApplyDeploymentRequest) {
	t.Helper()
	d := r.GetDeployment()
	if d == nil {
		t.Fatal("a request without a deployment was accepted")
	}
	if n := proto.Size(r); n > 64<<10 {
		t.Errorf("accepted a %d-byte request", n)
	}
	if !isDNSLabel(d.GetName()) {
		t.Errorf("accepted name %q", d.GetName())
	}
	if !isProfileName(d.GetProfile()) {
		t.Errorf("accepted profile %q", d.GetProfile())
	}
	minR, maxR := d.GetMinReplicas(), d.GetMaxReplicas()
	if maxR < 1 || maxR > 10000 || minR > maxR {
		t.Errorf("accepted replicas min %d max %d", minR, maxR)
	}
	if g, m := d.GetGpusPerReplica(), d.GetGpuMemoryMib(); g > 16 || m > 1<<20 || (g == 0 && m > 0) {
		t.Errorf("accepted %d GPUs with %d MiB each", g, m)
	}
	if len(d.GetNodeSelector()) > 64 {
		t.Errorf("accepted %d node selector labels", len(d.GetNodeSelector()))
	}
	for k, v := range d.GetNodeSelector() {
		if k == "" || len(k) > 128 || len(v) > 63 {
			t.Errorf("accepted node selector %q=%q", k, v)
		}
	}
	if len(d.GetServedModels()) > 32 {
		t.Errorf("accepted %d served models", len(d.GetServedModels()))
	}
	seen := map[string]bool{}
	for _, m := range d.GetServedModels() {
		if m == "" || len(m) > 256 || seen[m] || strings.ContainsFunc(m, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("accepted served model %q in %q", m, d.GetServedModels())
		}
		seen[m] = true
	}
	if w := d.GetIdleToZero(); w != nil && (w.AsDuration() < 0 || w.AsDuration() > 7*24*time.Hour) {
		t.Errorf("accepted idle_to_zero %v", w.AsDuration())
	}
	if w := d.GetColdStartWait(); w != nil && (w.AsDuration() < time.Second || w.AsDuration() > time.Hour) {
		t.Errorf("accepted cold_start_wait %v", w.AsDuration())
	}

	// Unknown fields anywhere would be lost on the way to etcd: dropping them changes nothing.
	wire, err := proto.Marshal(r)
	if err != nil {
		t.Fatalf("marshal an accepted request: %v", err)
	}
	var known llmscalerv1.ApplyDeploymentRequest
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(wire, &known); err != nil || !proto.Equal(&known, r) {
		t.Errorf("accepted a request with unknown fields (or one that does not decode again: %v)", err)
	}
	// The JSON form (grpcurl, the status page) of an accepted spec is accepted again.
	js, err := protojson.Marshal(r)
	if err != nil {
		t.Fatalf("protojson of an accepted request: %v", err)
	}
	var back llmscalerv1.ApplyDeploymentRequest
	if err := protojson.Unmarshal(js, &back); err != nil {
		t.Fatalf("the JSON of an accepted request does not decode: %v\n%s", err, js)
	}
	if fe := validateApply(&back); fe != nil {
		t.Errorf("the JSON form of an accepted request is refused: %v\n%s", fe, js)
	}

	// The policy builds an autoscaler, and its first decision keeps within the bounds.
	as, err := policy.NewAutoscaler(d.GetPolicy())
	if err != nil {
		t.Fatalf("accepted policy does not build an autoscaler: %v", err)
	}
	if c := as.Config(); c.Panic <= 0 || c.Panic >= c.Stable || c.Stable > time.Hour {
		t.Errorf("accepted policy has windows panic %v stable %v", c.Panic, c.Stable)
	}
	dec := as.Evaluate(policy.Input{Now: time.Unix(1e9, 0), Deployment: d.GetName(), Ready: int(minR), Min: int(minR), Max: int(maxR)})
	if !dec.DryRun && (dec.Desired < int(minR) || dec.Desired > int(maxR)) {
		t.Errorf("first decision %d outside [%d, %d]: %s", dec.Desired, minR, maxR, dec.Reason)
	}
}

func checkScale(t *testing.T, r *llmscalerv1.ScaleDeploymentRequest, spec *llmscalerv1.DeploymentSpec) {
	t.Helper()
	fe := validateScale(r, spec)
	if again := validateScale(proto.Clone(r).(*llmscalerv1.ScaleDeploymentRequest), spec); errText(fe) != errText(again) {
		t.Fatalf("scale validation is not deterministic: %q, then %q", errText(fe), errText(again))
	}
	if fe != nil {
		st := status.Convert(fe.grpcStatus())
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), fe.field+": ") {
			t.Fatalf("scale refusal is %v %q", st.Code(), st.Message())
		}
		return
	}
	if r.Replicas != nil && (r.GetClearReplicas() || r.GetReplicas() > spec.GetMaxReplicas()) {
		t.Errorf("accepted replicas %d (clear %v) for max %d", r.GetReplicas(), r.GetClearReplicas(), spec.GetMaxReplicas())
	}
	if _, known := llmscalerv1.AutoscalingAction_name[int32(r.GetAutoscaling())]; !known {
		t.Errorf("accepted autoscaling action %d", r.GetAutoscaling())
	}
	if r.Replicas == nil && !r.GetClearReplicas() && r.GetAutoscaling() == llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_UNSPECIFIED {
		t.Error("accepted a scale request that asks for nothing")
	}
}

func errText(fe *fieldError) string {
	if fe == nil {
		return ""
	}
	return fe.Error()
}

// isDNSLabel is the documented deployment name rule: 1-63 of a-z, 0-9 and '-', starting
// and ending with a letter or digit.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isProfileName is the documented profile rule: 1-128 letters, digits, '-', '.' and '_',
// starting and ending with a letter or digit.
func isProfileName(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if s == "" || len(s) > 128 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for _, c := range []byte(s) {
		if !alnum(c) && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}
