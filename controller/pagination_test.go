package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestParsePage(t *testing.T) {
	tok := func(after, filter string) string {
		_, _, next := pageRequest{size: 1, filter: filter}.page([]string{after, after + "z"})
		return next
	}
	tests := []struct {
		name      string
		size      int32
		token     string
		filter    string
		wantSize  int
		wantAfter string
		wantErr   string
	}{
		{name: "default size", wantSize: defaultPageSize},
		{name: "size kept", size: 7, wantSize: 7},
		{name: "size capped", size: 1 << 20, wantSize: maxPageSize},
		{name: "negative size", size: -1, wantErr: "page_size: -1 is negative"},
		{name: "a token of this filter", size: 2, token: tok("n1", "f"), filter: "f", wantSize: 2, wantAfter: "n1"},
		{name: "a token of another filter", token: tok("n1", "f"), filter: "g", wantErr: "page_token: was made for other filters"},
		{name: "not base64", token: "%%%", wantErr: "page_token: is not a token this controller made"},
		{name: "base64 of junk", token: "aGVsbG8", wantErr: "page_token: is not a token this controller made"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePage(tc.size, tc.token, tc.filter)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.field+": "+err.msg, tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || p.size != tc.wantSize || p.after != tc.wantAfter {
				t.Fatalf("got %+v, %v; want size %d after %q", p, err, tc.wantSize, tc.wantAfter)
			}
		})
	}
}

// TestListNodesPages: a fleet of 12 nodes in pages of 5 is every node once, in order, with
// the total on every page; filters apply before paging; a token with other filters is
// refused.
func TestListNodesPages(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	cli := admin(t, r)
	ctx := ctxT(t)
	var want []string
	for i := range 12 {
		h := hello(fmt.Sprintf("n%02d", i), "run", 1)
		if i%3 == 0 {
			h.GetHello().Labels = map[string]string{"zone": "b"}
		}
		if _, _, err := connect(t, r.GRPCAddr(), h); err != nil {
			t.Fatal(err)
		}
		want = append(want, h.GetHello().GetNodeId())
	}
	all := func(req *llmscalerv1.ListNodesRequest) (ids []string, pages int) {
		t.Helper()
		for {
			resp, err := cli.ListNodes(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, n := range resp.GetNodes() {
				ids = append(ids, n.GetNodeId())
			}
			if resp.GetNextPageToken() == "" {
				return ids, pages
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	waitFor(t, 10*time.Second, "12 nodes", func() bool {
		resp, err := cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
		return err == nil && resp.GetTotalSize() == 12
	})
	if ids, pages := all(&llmscalerv1.ListNodesRequest{PageSize: 5}); strings.Join(ids, " ") != strings.Join(want, " ") || pages != 3 {
		t.Fatalf("in pages of 5: %v in %d pages, want %v in 3", ids, pages, want)
	}
	if ids, _ := all(&llmscalerv1.ListNodesRequest{PageSize: 2, Labels: map[string]string{"zone": "b"}}); strings.Join(ids, " ") != "n00 n03 n06 n09" {
		t.Fatalf("zone b: %v", ids)
	}
	first, err := cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{PageSize: 2, Labels: map[string]string{"zone": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{PageSize: 2, PageToken: first.GetNextPageToken()})
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "page_token: ") {
		t.Fatalf("a token used with other filters: %v, want InvalidArgument naming page_token", err)
	}
	resp, err := cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{State: llmscalerv1.NodeState_NODE_STATE_LOST})
	if err != nil || len(resp.GetNodes()) != 0 || resp.GetTotalSize() != 0 {
		t.Fatalf("lost nodes: %v, %v", resp, err)
	}
	_, err = cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{State: 99})
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "state: ") {
		t.Fatalf("state 99: %v", err)
	}
}

// TestInstancePages: instances page in (node, instance) order across nodes whose ids are
// prefixes of each other, each once, with the filter applied before paging.
func TestInstancePages(t *testing.T) {
	f := newFleet(time.Now, time.Minute, func(*llmscalerv1.Event) {})
	for _, node := range []string{"n1", "n1-b", "n10"} {
		h := hello(node, "run", 2).GetHello()
		for i := range 3 {
			ph := ready
			if i == 2 {
				ph = starting
			}
			h.Instances = append(h.Instances, inst(fmt.Sprintf("%s-i%d", node, i), "d", ph, []uint32{uint32(i)}, 0))
		}
		if _, _, err := f.attach(h, "addr"); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	p, _ := parsePage(2, "", "")
	for pages := 1; ; pages++ {
		ins, next, total := f.instancePage("", func(in *llmscalerv1.InstanceStatus) bool { return in.GetPhase() == ready }, p)
		if total != 6 {
			t.Fatalf("total %d, want 6", total)
		}
		for _, in := range ins {
			got = append(got, in.GetNodeId()+":"+in.GetStatus().GetInstanceId())
		}
		if next == "" {
			if pages != 3 {
				t.Fatalf("%d pages, want 3", pages)
			}
			break
		}
		var err *fieldError
		if p, err = parsePage(2, next, ""); err != nil {
			t.Fatal(err)
		}
	}
	want := "n1:n1-i0 n1:n1-i1 n1-b:n1-b-i0 n1-b:n1-b-i1 n10:n10-i0 n10:n10-i1"
	if strings.Join(got, " ") != want {
		t.Fatalf("pages gave %v, want %s", got, want)
	}
}
