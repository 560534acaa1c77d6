// Package agent is the llmscaler agent: one process per GPU host that holds a single gRPC
// stream to the leading controller, reports what its GPUs are doing, and answers commands.
//
// The agent is built to be safe against a controller fleet that fails over:
//
//   - It tries each controller address in turn and follows a NOT_LEADER redirect straight to
//     the leader, backing off when redirects go round in circles.
//   - Every leader has an epoch. The agent persists the highest epoch it has accepted in its
//     data directory and refuses a welcome or command from a lower one, so a deposed leader
//     cannot act on a node even after the agent restarts.
//   - Commands are idempotent by command_id: a recent id is answered with its first result.
//   - Reports made while no stream is up are kept in a bounded buffer and sent, marked
//     buffered, after the next welcome; when the buffer is full the oldest go first, and the
//     count of dropped reports travels in every report.
//
// This version has no catalog and supervises no model servers: it answers every start and
// stop with a rejection that says so. Supervision arrives with a later issue and replaces the
// executor.
package agent
