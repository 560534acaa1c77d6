package agent

import (
	"errors"
	"fmt"

	"github.com/llmscaler/llmscaler/agent/supervisor"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// executor makes one instance of a desired state true. Both calls are idempotent: starting
// an instance that runs with the same profile and GPUs, or stopping one that is stopping or
// gone, does nothing. They must return quickly: they run on the stream loop.
type executor interface {
	start(*llmscalerv1.StartInstance) error
	stop(*llmscalerv1.StopInstance) error
}

// noCatalog is the executor of an agent started without --catalog: it can start nothing and
// runs nothing to stop, and says so rather than pretending to accept.
type noCatalog struct{}

func (noCatalog) start(s *llmscalerv1.StartInstance) error {
	return fmt.Errorf("profile %q is not in this agent's catalog (the agent was started without --catalog)", s.GetProfile())
}

func (noCatalog) stop(*llmscalerv1.StopInstance) error { return nil }

// supervised is the executor of an agent with a catalog: the supervisor checks each start
// against the catalog and this node's GPUs and runs the servers.
type supervised struct{ sup *supervisor.Supervisor }

func (e supervised) start(s *llmscalerv1.StartInstance) error { return e.sup.Start(s) }

func (e supervised) stop(s *llmscalerv1.StopInstance) error {
	if err := e.sup.Stop(s); err != nil && !errors.Is(err, supervisor.ErrUnknownInstance) {
		return err
	}
	return nil // an instance that is gone is as drained as it gets
}

// appliedVersion is the last desired state applied: its epoch and version. It is owned by
// the connection loop and kept across streams, so that the state a new stream opens with is
// not applied twice.
type appliedVersion struct {
	epoch   int64
	version uint64
}

// handleDesired applies one desired state and answers it. A state of an older epoch than one
// accepted is refused whole; a version already applied is answered as a duplicate. Drains go
// first, then starts; an instance that cannot be started or stopped is listed in the answer
// with the reason, and the rest are applied.
func (a *Agent) handleDesired(ds *llmscalerv1.DesiredState) *llmscalerv1.DesiredStateAck {
	ack := &llmscalerv1.DesiredStateAck{Epoch: ds.GetEpoch(), Version: ds.GetVersion()}
	ok, highest, err := a.fence.Raise(ds.GetEpoch())
	switch {
	case err != nil:
		// Nothing applied: the controller sends it again on the next stream.
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED
		ack.Message = fmt.Sprintf("agent cannot record epoch %d: %v", ds.GetEpoch(), err)
		return ack
	case !ok:
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_STALE_EPOCH
		ack.Message = fmt.Sprintf("desired state epoch %d is older than epoch %d, the newest this agent has accepted", ds.GetEpoch(), highest)
		return ack
	case ds.GetEpoch() == a.applied.epoch && ds.GetVersion() <= a.applied.version:
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_DUPLICATE
		ack.Message = fmt.Sprintf("version %d already applied (latest %d)", ds.GetVersion(), a.applied.version)
		return ack
	}
	reject := func(id string, err error) {
		ack.Rejected = append(ack.Rejected, &llmscalerv1.InstanceRejection{InstanceId: id, Message: err.Error()})
	}
	for _, s := range ds.GetDrain() {
		if err := a.exec.stop(s); err != nil {
			reject(s.GetInstanceId(), err)
		}
	}
	for _, s := range ds.GetInstances() {
		if err := a.exec.start(s); err != nil {
			reject(s.GetInstanceId(), err)
		}
	}
	a.applied = appliedVersion{epoch: ds.GetEpoch(), version: ds.GetVersion()}
	ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED
	ack.Message = fmt.Sprintf("%d instances, %d to drain, %d refused", len(ds.GetInstances()), len(ds.GetDrain()), len(ack.GetRejected()))
	return ack
}
