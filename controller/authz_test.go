package controller

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestAuthorizationTable is the authorization table, method by method and caller by caller.
// Every method of the controller's services must be in it, so that a new method is decided
// here, on purpose.
func TestAuthorizationTable(t *testing.T) {
	const (
		A = "admin"
		R = "readonly"
		T = "router" // rouTer
		N = "node/n1"
		C = "controller"
		I = "insecure"
	)
	// Who may call each method; every other caller is refused.
	table := map[string][]string{
		"llmscaler.v1.AgentService/Connect": {N, I},

		"llmscaler.v1.AdminService/ApplyDeployment":  {A, I},
		"llmscaler.v1.AdminService/DeleteDeployment": {A, I},
		"llmscaler.v1.AdminService/ScaleDeployment":  {A, I},
		"llmscaler.v1.AdminService/CordonNode":       {A, I},
		"llmscaler.v1.AdminService/UncordonNode":     {A, I},
		"llmscaler.v1.AdminService/DrainNode":        {A, I},

		"llmscaler.v1.AdminService/ListNodes":        {A, R, I},
		"llmscaler.v1.AdminService/GetNode":          {A, R, I},
		"llmscaler.v1.AdminService/ListDeployments":  {A, R, I},
		"llmscaler.v1.AdminService/GetDeployment":    {A, R, I},
		"llmscaler.v1.AdminService/ListInstances":    {A, R, I},
		"llmscaler.v1.AdminService/ListDecisions":    {A, R, I},
		"llmscaler.v1.AdminService/WatchEvents":      {A, R, I},
		"llmscaler.v1.AdminService/GetClusterStatus": {A, R, I},

		"llmscaler.v1.AdminService/WatchEndpoints": {A, T, I},
		"llmscaler.v1.RouterService/ReportRouter":  {A, T, I},

		"grpc.health.v1.Health/Check":                                   {A, R, T, N, C, I},
		"grpc.health.v1.Health/Watch":                                   {A, R, T, N, C, I},
		"grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {A, R, T, N, C, I},
		"grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {A, R, T, N, C, I},
		"llmscaler.v1.AdminService/NoSuchMethod":                        {},
	}
	for _, sd := range []protoreflect.ServiceDescriptor{
		llmscalerv1.File_llmscaler_v1_agent_proto.Services().ByName("AgentService"),
		llmscalerv1.File_llmscaler_v1_admin_proto.Services().ByName("AdminService"),
		llmscalerv1.File_llmscaler_v1_admin_proto.Services().ByName("RouterService"),
	} {
		for i := range sd.Methods().Len() {
			m := fmt.Sprintf("%s/%s", sd.FullName(), sd.Methods().Get(i).Name())
			if _, ok := table[m]; !ok {
				t.Errorf("%s is not in the authorization table of this test; decide who may call it (methodAccess)", m)
			}
		}
	}
	callers := map[string]caller{
		A: {id: transport.Identity{Role: transport.RoleAdmin}},
		R: {id: transport.Identity{Role: transport.RoleReadonly}},
		T: {id: transport.Identity{Role: transport.RoleRouter}},
		N: {id: transport.NodeIdentity("n1")},
		C: {id: transport.Identity{Role: transport.RoleController}},
		I: {insecure: true},
	}
	for method, allowed := range table {
		for name, c := range callers {
			want := false
			for _, a := range allowed {
				want = want || a == name
			}
			err := authorize(c, "/"+method)
			if (err == nil) != want {
				t.Errorf("%s calling %s: %v, want allowed %v", name, method, err, want)
			}
			if err != nil && status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s calling %s: code %v, want PermissionDenied", name, method, status.Code(err))
			}
		}
	}
}

func TestRefusalMessages(t *testing.T) {
	for _, tc := range []struct {
		c      caller
		method string
		want   string
	}{
		{caller{id: transport.Identity{Role: transport.RoleReadonly}}, llmscalerv1.AdminService_ApplyDeployment_FullMethodName,
			"readonly may not call llmscaler.v1.AdminService/ApplyDeployment: it needs admin"},
		{caller{id: transport.NodeIdentity("n1")}, llmscalerv1.AdminService_ListNodes_FullMethodName,
			"node/n1 may not call llmscaler.v1.AdminService/ListNodes: it needs admin or readonly"},
		{caller{id: transport.Identity{Role: transport.RoleReadonly}, forwarded: true}, llmscalerv1.AdminService_WatchEndpoints_FullMethodName,
			"readonly (forwarded by a controller) may not call llmscaler.v1.AdminService/WatchEndpoints: it needs router or admin"},
		{caller{id: transport.Identity{Role: transport.RoleAdmin}}, llmscalerv1.AgentService_Connect_FullMethodName,
			"admin may not call llmscaler.v1.AgentService/Connect: it needs a node identity"},
		{caller{id: transport.Identity{Role: transport.RoleController}}, llmscalerv1.AdminService_GetNode_FullMethodName,
			"controller may not call llmscaler.v1.AdminService/GetNode: it needs admin or readonly"},
		{caller{insecure: true}, "/x.Y/Z", "insecure may not call x.Y/Z: it needs a rule, and it has none"},
	} {
		err := authorize(tc.c, tc.method)
		if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || st.Message() != tc.want {
			t.Errorf("authorize(%s, %s) = %v, want PermissionDenied: %s", tc.c.describe(), tc.method, err, tc.want)
		}
	}
}

func TestLimiters(t *testing.T) {
	l := newLimiters(0.001, 3)
	for i := range 3 {
		if !l.allow("admin") {
			t.Fatalf("call %d of a burst of 3 refused", i+1)
		}
	}
	if l.allow("admin") {
		t.Error("a fourth call in the burst allowed")
	}
	if !l.allow("node/n1") {
		t.Error("another identity shares admin's bucket")
	}
	unlimited := newLimiters(-1, 1)
	for range 100 {
		if !unlimited.allow("admin") {
			t.Fatal("a negative rate still limits")
		}
	}
}
