package controller

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/llmscaler/llmscaler/internal/names"
	"github.com/llmscaler/llmscaler/internal/policy"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Bounds on a deployment spec: beyond them a number is a typo, not a plan.
const (
	// maxServedModels bounds a deployment's served model names.
	maxServedModels = 32

	maxAdminRequestBytes = 64 << 10
	maxGPUsPerReplica    = 16
	maxGPUMemoryMiB      = 1 << 20 // 1 TiB per GPU
	maxReplicas          = 10000
)

// fieldError is a bad field in a request: the field's path and what is wrong with it.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// grpcStatus turns a field error into InvalidArgument with a BadRequest detail naming the field.
func (e *fieldError) grpcStatus() error {
	st := status.New(codes.InvalidArgument, e.Error())
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: e.field, Description: e.msg}}}); err == nil {
		st = d
	}
	return st.Err()
}

func badField(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// checkRequestSize refuses requests too large to be a deployment spec.
func checkRequestSize(m proto.Message) *fieldError {
	if n := proto.Size(m); n > maxAdminRequestBytes {
		return badField("request", "%d bytes, at most %d allowed", n, maxAdminRequestBytes)
	}
	return nil
}

// checkUnknown refuses fields this controller does not know (sent by a newer client, or
// garbage): silently dropping them would store something other than what was asked for.
func checkUnknown(path string, m protoreflect.Message) *fieldError {
	if len(m.GetUnknown()) > 0 {
		return badField(path, "has fields this controller does not know")
	}
	var fe *fieldError
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len() && fe == nil; i++ {
				fe = checkUnknown(fmt.Sprintf("%s.%s[%d]", path, fd.Name(), i), l.Get(i).Message())
			}
		} else {
			fe = checkUnknown(path+"."+string(fd.Name()), v.Message())
		}
		return fe == nil
	})
	return fe
}

// validateDeploymentSpec checks a spec before anything is written. Field paths are as the
// ApplyDeployment request names them.
func validateDeploymentSpec(d *llmscalerv1.DeploymentSpec) *fieldError {
	const p = "deployment."
	if d == nil {
		return badField("deployment", "is missing")
	}
	if fe := checkUnknown("deployment", d.ProtoReflect()); fe != nil {
		return fe
	}
	if err := names.DeploymentName(d.GetName()); err != nil {
		return badField(p+"name", "%v", err)
	}
	if err := names.Profile(d.GetProfile()); err != nil {
		return badField(p+"profile", "%v", err)
	}
	if g := d.GetGpusPerReplica(); g > maxGPUsPerReplica {
		return badField(p+"gpus_per_replica", "%d, at most %d allowed", g, maxGPUsPerReplica)
	}
	if m := d.GetGpuMemoryMib(); m > maxGPUMemoryMiB {
		return badField(p+"gpu_memory_mib", "%d MiB, at most %d allowed per GPU", m, maxGPUMemoryMiB)
	}
	if d.GetGpusPerReplica() == 0 && d.GetGpuMemoryMib() > 0 {
		return badField(p+"gpu_memory_mib", "is %d but gpus_per_replica is 0 (a CPU-only server needs no GPU memory)", d.GetGpuMemoryMib())
	}
	if d.GetMaxReplicas() < 1 {
		return badField(p+"max_replicas", "must be at least 1")
	}
	if d.GetMaxReplicas() > maxReplicas {
		return badField(p+"max_replicas", "%d, at most %d allowed", d.GetMaxReplicas(), maxReplicas)
	}
	if d.GetMinReplicas() > d.GetMaxReplicas() {
		return badField(p+"min_replicas", "%d is greater than max_replicas %d", d.GetMinReplicas(), d.GetMaxReplicas())
	}
	if err := names.Labels(d.GetNodeSelector()); err != nil {
		return badField(p+"node_selector", "%v", err)
	}
	if len(d.GetServedModels()) > maxServedModels {
		return badField(p+"served_models", "%d names, at most %d allowed", len(d.GetServedModels()), maxServedModels)
	}
	seen := map[string]bool{}
	for i, m := range d.GetServedModels() {
		f := fmt.Sprintf("%sserved_models[%d]", p, i)
		switch {
		case m == "" || len(m) > 256:
			return badField(f, "%q: want 1 to 256 characters", m)
		case strings.ContainsFunc(m, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return badField(f, "%q contains a control character", m)
		case seen[m]:
			return badField(f, "%q is listed twice", m)
		}
		seen[m] = true
	}
	if w := d.GetIdleToZero(); w != nil {
		if err := w.CheckValid(); err != nil || w.AsDuration() < 0 || w.AsDuration() > 7*24*time.Hour {
			return badField(p+"idle_to_zero", "%v: want 0 to 7 days", w.AsDuration())
		}
	}
	if w := d.GetColdStartWait(); w != nil {
		if err := w.CheckValid(); err != nil || w.AsDuration() < time.Second || w.AsDuration() > time.Hour {
			return badField(p+"cold_start_wait", "%v: want 1 s to 1 h", w.AsDuration())
		}
	}
	if err := policy.Validate(d.GetPolicy()); err != nil {
		// policy.Validate names the field: "deployment.policy.<path>: <problem>".
		field, msg, ok := strings.Cut(err.Error(), ": ")
		if !ok || !strings.HasPrefix(field, "deployment.policy") {
			field, msg = p+"policy", err.Error()
		}
		return badField(field, "%s", msg)
	}
	return nil
}

// validateScale checks a ScaleDeployment request against the stored spec.
func validateScale(r *llmscalerv1.ScaleDeploymentRequest, spec *llmscalerv1.DeploymentSpec) *fieldError {
	if r.Replicas != nil && r.GetClearReplicas() {
		return badField("clear_replicas", "cannot be set together with replicas")
	}
	if r.Replicas != nil {
		// A count set by hand may go below min_replicas (an operator's explicit choice, say
		// to free GPUs), even to zero (routers then hold requests until their wait runs
		// out), but not above max_replicas, the deployment's budget.
		n := r.GetReplicas()
		if n > spec.GetMaxReplicas() {
			return badField("replicas", "%d is outside [0, max_replicas %d]", n, spec.GetMaxReplicas())
		}
	}
	switch r.GetAutoscaling() {
	case llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_UNSPECIFIED, llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_PAUSE, llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_RESUME:
	default:
		return badField("autoscaling", "unknown value %d: want AUTOSCALING_ACTION_PAUSE or AUTOSCALING_ACTION_RESUME", r.GetAutoscaling())
	}
	if r.Replicas == nil && !r.GetClearReplicas() && r.GetAutoscaling() == llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_UNSPECIFIED {
		return badField("replicas", "nothing to do: set replicas, clear_replicas or autoscaling")
	}
	return nil
}
