// Package agent is the llmscaler agent: one process per GPU host that holds a single gRPC
// stream to the leading controller, reports what its GPUs are doing, and makes its model servers match the desired state the
// leader sends.
//
// The agent is built to be safe against a controller fleet that fails over:
//
//   - It tries each controller address in turn and follows a NOT_LEADER redirect straight to
//     the leader, backing off when redirects go round in circles.
//   - Every leader has an epoch. The agent persists the highest epoch it has accepted in its
//     data directory and refuses a welcome or desired state from a lower one, so a deposed
//     leader cannot act on a node even after the agent restarts.
//   - A desired state is the whole set of instances to run and to drain, versioned within an
//     epoch: a version already applied is answered as a duplicate, and applying one is
//     idempotent (a running instance is not started again, a gone one is as drained as it
//     gets). An instance it does not list is left alone.
//   - Reports made while no stream is up are kept in a bounded buffer and sent, marked
//     buffered, after the next welcome; when the buffer is full the oldest go first, and the
//     count of dropped reports travels in every report.
//
// Without --catalog the agent supervises nothing and refuses every start, saying so; with
// one, the supervisor (package supervisor) runs the servers.
package agent
