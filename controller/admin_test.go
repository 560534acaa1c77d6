package controller

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func goodSpec() *llmscalerv1.DeploymentSpec {
	return &llmscalerv1.DeploymentSpec{
		Name: "llama-8b", Profile: "vllm-llama-8b", GpusPerReplica: 1, GpuMemoryMib: 20000,
		MinReplicas: 1, MaxReplicas: 4, NodeSelector: map[string]string{"gpu": "a100"},
	}
}

func TestApplyDeploymentRefusesBadInput(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	cli := admin(t, r)
	ctx := ctxT(t)
	huge := map[string]string{}
	for i := range 2000 {
		huge[strings.Repeat("k", 40)+string(rune('a'+i%26))+strings.Repeat("x", i%60)] = strings.Repeat("v", 60)
	}
	tests := []struct {
		name  string
		edit  func(*llmscalerv1.DeploymentSpec)
		field string
	}{
		{"empty name", func(d *llmscalerv1.DeploymentSpec) { d.Name = "" }, "deployment.name"},
		{"invalid name", func(d *llmscalerv1.DeploymentSpec) { d.Name = "Llama_8B" }, "deployment.name"},
		{"empty profile", func(d *llmscalerv1.DeploymentSpec) { d.Profile = "" }, "deployment.profile"},
		{"path as profile", func(d *llmscalerv1.DeploymentSpec) { d.Profile = "/bin/sh -c rm" }, "deployment.profile"},
		{"min greater than max", func(d *llmscalerv1.DeploymentSpec) { d.MinReplicas, d.MaxReplicas = 5, 3 }, "deployment.min_replicas"},
		{"max zero", func(d *llmscalerv1.DeploymentSpec) { d.MinReplicas, d.MaxReplicas = 0, 0 }, "deployment.max_replicas"},
		{"empty served model", func(d *llmscalerv1.DeploymentSpec) { d.ServedModels = []string{"m", ""} }, "deployment.served_models[1]"},
		{"served model twice", func(d *llmscalerv1.DeploymentSpec) { d.ServedModels = []string{"m", "m"} }, "deployment.served_models[1]"},
		{"negative idle", func(d *llmscalerv1.DeploymentSpec) { d.IdleToZero = durationpb.New(-time.Second) }, "deployment.idle_to_zero"},
		{"cold start wait too short", func(d *llmscalerv1.DeploymentSpec) { d.ColdStartWait = durationpb.New(time.Millisecond) }, "deployment.cold_start_wait"},
		{"absurd max", func(d *llmscalerv1.DeploymentSpec) { d.MaxReplicas = 4_000_000_000 }, "deployment.max_replicas"},
		{"absurd gpus", func(d *llmscalerv1.DeploymentSpec) { d.GpusPerReplica = 1000 }, "deployment.gpus_per_replica"},
		{"absurd memory", func(d *llmscalerv1.DeploymentSpec) { d.GpuMemoryMib = 1 << 40 }, "deployment.gpu_memory_mib"},
		{"memory without gpus", func(d *llmscalerv1.DeploymentSpec) { d.GpusPerReplica = 0 }, "deployment.gpu_memory_mib"},
		{"bad selector", func(d *llmscalerv1.DeploymentSpec) { d.NodeSelector = map[string]string{"gpu": "a 100"} }, "deployment.node_selector"},
		{"unknown field", func(d *llmscalerv1.DeploymentSpec) { d.ProtoReflect().SetUnknown([]byte{0xf8, 0x3e, 0x01}) }, "deployment"},
		{"oversized", func(d *llmscalerv1.DeploymentSpec) { d.NodeSelector = huge }, "request"},
		{"target policy without target", func(d *llmscalerv1.DeploymentSpec) {
			d.Policy = &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Target{Target: &llmscalerv1.TargetPolicy{}}}
		}, "deployment.policy.target.target"},
		{"slo percentile out of range", func(d *llmscalerv1.DeploymentSpec) {
			d.Policy = &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Slo{Slo: &llmscalerv1.SloPolicy{Percentile: proto.Float64(100)}}}
		}, "deployment.policy.slo.percentile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := goodSpec()
			tc.edit(d)
			_, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: d})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
				t.Fatalf("message %q does not start with the field %q", status.Convert(err).Message(), tc.field)
			}
			var fields []string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if len(fields) != 1 || fields[0] != tc.field {
				t.Fatalf("BadRequest fields %v, want [%s]", fields, tc.field)
			}
		})
	}
	list, err := cli.ListDeployments(ctx, &llmscalerv1.ListDeploymentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetDeployments()) != 0 {
		t.Fatalf("refused requests wrote %d deployments", len(list.GetDeployments()))
	}
}

func TestDeploymentLifecycle(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	cli := admin(t, r)
	ctx := ctxT(t)

	applied, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()})
	if err != nil {
		t.Fatal(err)
	}
	firstCreated := applied.GetDeployment().GetCreatedAt().AsTime()
	if !applied.GetCreated() || applied.GetDeployment().GetGeneration() != 1 {
		t.Fatalf("first apply: created=%v generation=%d, want true 1", applied.GetCreated(), applied.GetDeployment().GetGeneration())
	}

	sc, err := cli.ScaleDeployment(ctx, &llmscalerv1.ScaleDeploymentRequest{Name: "llama-8b", Replicas: proto.Uint32(3), Autoscaling: llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_PAUSE})
	if err != nil {
		t.Fatal(err)
	}
	if sc.GetDeployment().GetScale().GetManualReplicas() != 3 || !sc.GetDeployment().GetScale().GetPaused() {
		t.Fatalf("scale state %v, want manual 3 paused", sc.GetDeployment().GetScale())
	}
	if got := sc.GetDeployment().GetStatus().GetDesiredReplicas(); got != 3 {
		t.Fatalf("desired replicas %d, want 3", got)
	}

	_, err = cli.ScaleDeployment(ctx, &llmscalerv1.ScaleDeploymentRequest{Name: "llama-8b", Replicas: proto.Uint32(9)})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "replicas:") {
		t.Fatalf("out-of-bounds scale: got %v, want InvalidArgument naming replicas", err)
	}
	_, err = cli.ScaleDeployment(ctx, &llmscalerv1.ScaleDeploymentRequest{Name: "nope", Replicas: proto.Uint32(1)})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("scale of a missing deployment: got %v, want NotFound", err)
	}

	// A new spec keeps the manual scale state.
	spec := goodSpec()
	spec.MaxReplicas = 8
	applied, err = cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec})
	if err != nil {
		t.Fatal(err)
	}
	d := applied.GetDeployment()
	if applied.GetCreated() || d.GetGeneration() != 3 || d.GetScale().GetManualReplicas() != 3 || d.GetSpec().GetMaxReplicas() != 8 {
		t.Fatalf("re-apply gave created=%v gen=%d scale=%v max=%d", applied.GetCreated(), d.GetGeneration(), d.GetScale(), d.GetSpec().GetMaxReplicas())
	}
	if !d.GetCreatedAt().AsTime().Equal(firstCreated) || d.GetUpdatedAt().AsTime().Before(firstCreated) {
		t.Fatalf("timestamps created %v updated %v", d.GetCreatedAt(), d.GetUpdatedAt())
	}

	got, err := cli.GetDeployment(ctx, &llmscalerv1.GetDeploymentRequest{Name: "llama-8b"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetDeployment().GetSpec(), spec) {
		t.Fatalf("stored spec %v, want %v", got.GetDeployment().GetSpec(), spec)
	}

	if _, err := cli.DeleteDeployment(ctx, &llmscalerv1.DeleteDeploymentRequest{Name: "llama-8b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.GetDeployment(ctx, &llmscalerv1.GetDeploymentRequest{Name: "llama-8b"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
	if _, err := cli.DeleteDeployment(ctx, &llmscalerv1.DeleteDeploymentRequest{Name: "llama-8b"}); status.Code(err) != codes.NotFound {
		t.Fatalf("second delete: %v, want NotFound", err)
	}
}

func TestUnknownNamesAreNotFound(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	cli := admin(t, r)
	ctx := ctxT(t)
	if _, err := cli.DrainNode(ctx, &llmscalerv1.DrainNodeRequest{NodeId: "never-seen"}); status.Code(err) != codes.NotFound {
		t.Fatalf("DrainNode of an unknown node: %v, want NotFound", err)
	}
	if _, err := cli.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "x"}); status.Code(err) != codes.NotFound {
		t.Fatalf("ListDecisions of an unknown deployment: %v, want NotFound", err)
	}
	if _, err := cli.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "Bad_Name"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListDecisions with a bad name: %v, want InvalidArgument", err)
	}
}

func TestDesiredStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("")
	cfg.EtcdEndpoints = nil
	cfg.DataDir = dir
	cfg.EtcdClientAddr, cfg.EtcdPeerAddr = "127.0.0.1:0", "127.0.0.1:0"

	r := startController(t, cfg)
	waitLeader(t, r)
	ctx := ctxT(t)
	cli := admin(t, r)
	if _, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ScaleDeployment(ctx, &llmscalerv1.ScaleDeploymentRequest{Name: "llama-8b", Replicas: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	r.stop(t)

	r2 := startController(t, cfg)
	waitLeader(t, r2)
	got, err := admin(t, r2).GetDeployment(ctx, &llmscalerv1.GetDeploymentRequest{Name: "llama-8b"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetDeployment().GetSpec(), goodSpec()) || got.GetDeployment().GetScale().GetManualReplicas() != 2 {
		t.Fatalf("after restart: %v", got.GetDeployment())
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"malformed endpoint", func(c *Config) { c.EtcdEndpoints = []string{"127.0.0.1"} }, "--etcd-endpoints"},
		{"stray comma", func(c *Config) { c.EtcdEndpoints = []string{"127.0.0.1:2379", ""} }, "stray comma"},
		{"bad scheme", func(c *Config) { c.EtcdEndpoints = []string{"ftp://h:1"} }, "scheme"},
		{"no data dir", func(c *Config) { c.EtcdEndpoints = nil }, "--data-dir"},
		{"ttl too long", func(c *Config) { c.SessionTTL = 2 * 60e9 }, "--session-ttl"},
		{"bad grpc addr", func(c *Config) { c.GRPCAddr = "127.0.0.1:99999" }, "--grpc-addr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("127.0.0.1:2379")
			tc.edit(&cfg)
			c, err := New(cfg, hclogNull())
			if err == nil {
				c.grpcLis.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestUnreachableEtcdFailsAtStart(t *testing.T) {
	cfg := testConfig("127.0.0.1:1")
	cfg.EtcdDialTimeout = 500e6
	c, err := New(cfg, hclogNull())
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "etcd unreachable") {
		t.Fatalf("Run: %v, want an error saying etcd is unreachable", err)
	}
}
