package agent

import (
	"testing"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestReportQueue(t *testing.T) {
	tests := []struct {
		name        string
		capacity    int
		push        int
		wantSeqs    []uint64
		wantDropped []uint64 // dropped_reports stamped on each report left
	}{
		{"empty", 3, 0, nil, nil},
		{"under capacity keeps all in order", 3, 2, []uint64{1, 2}, []uint64{0, 0}},
		{"at capacity keeps all", 3, 3, []uint64{1, 2, 3}, []uint64{0, 0, 0}},
		{"over capacity drops the oldest", 3, 5, []uint64{3, 4, 5}, []uint64{0, 1, 2}},
		{"capacity one keeps the newest", 1, 4, []uint64{4}, []uint64{3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newReportQueue(tc.capacity)
			drops := 0
			for i := range tc.push {
				if q.push(&llmscalerv1.Report{Seq: uint64(i + 1)}, 0) {
					drops++
				}
			}
			if want := tc.push - len(tc.wantSeqs); drops != want || q.droppedTotal() != uint64(want) {
				t.Fatalf("push reported %d drops, droppedTotal %d, want %d", drops, q.droppedTotal(), want)
			}
			if q.len() != len(tc.wantSeqs) {
				t.Fatalf("len %d, want %d", q.len(), len(tc.wantSeqs))
			}
			for i, want := range tc.wantSeqs {
				e, ok := q.peek()
				if !ok {
					t.Fatalf("report %d: queue empty", i)
				}
				if e.report.GetSeq() != want || e.report.GetDroppedReports() != tc.wantDropped[i] {
					t.Fatalf("report %d: seq %d dropped %d, want seq %d dropped %d",
						i, e.report.GetSeq(), e.report.GetDroppedReports(), want, tc.wantDropped[i])
				}
				if !q.pop(e.report) {
					t.Fatalf("report %d: pop refused the oldest report", i)
				}
			}
			if _, ok := q.peek(); ok {
				t.Fatal("queue not empty after popping everything")
			}
		})
	}
}

// A report dropped while the stream was sending it must not take a report that was never
// sent with it when the stream pops it.
func TestReportQueuePopAfterDrop(t *testing.T) {
	q := newReportQueue(2)
	q.push(&llmscalerv1.Report{Seq: 1}, 0)
	q.push(&llmscalerv1.Report{Seq: 2}, 0)
	sending, _ := q.peek()
	q.push(&llmscalerv1.Report{Seq: 3}, 0) // drops seq 1 while it is "on the wire"
	if q.pop(sending.report) {
		t.Fatal("pop removed a report other than the one sent")
	}
	if e, _ := q.peek(); e.report.GetSeq() != 2 || q.len() != 2 {
		t.Fatalf("oldest is seq %d of %d reports, want seq 2 of 2", e.report.GetSeq(), q.len())
	}
}

func TestReportQueueReadySignal(t *testing.T) {
	q := newReportQueue(4)
	select {
	case <-q.ready:
		t.Fatal("ready before any push")
	default:
	}
	// Several pushes leave one signal: the sender drains the whole queue on it.
	q.push(&llmscalerv1.Report{Seq: 1}, 0)
	q.push(&llmscalerv1.Report{Seq: 2}, 0)
	select {
	case <-q.ready:
	default:
		t.Fatal("no ready signal after push")
	}
	select {
	case <-q.ready:
		t.Fatal("a second signal for one batch")
	default:
	}
}
