package agent

import (
	"container/list"
	"context"
	"fmt"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// executor carries out a command that passed the epoch and duplicate checks. It must answer
// quickly: it runs on the stream loop, so long work belongs in the background, reported later.
type executor interface {
	execute(ctx context.Context, cmd *llmscalerv1.Command) (llmscalerv1.CommandResult, string)
}

// noCatalog is the executor of an agent started without --catalog: it can start nothing and
// runs nothing to stop, and says so rather than pretending to accept.
type noCatalog struct{}

func (noCatalog) execute(_ context.Context, cmd *llmscalerv1.Command) (llmscalerv1.CommandResult, string) {
	switch act := cmd.GetAction().(type) {
	case *llmscalerv1.Command_StartInstance:
		return llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED,
			fmt.Sprintf("profile %q is not in this agent's catalog (the agent was started without --catalog)", act.StartInstance.GetProfile())
	case *llmscalerv1.Command_StopInstance:
		return llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED,
			fmt.Sprintf("no instance %q on this node", act.StopInstance.GetInstanceId())
	default:
		return llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED, "command has no action this agent knows"
	}
}

// commandOutcome is how a command ended, kept to answer its duplicates.
type commandOutcome struct {
	id      string
	result  llmscalerv1.CommandResult
	message string
}

// commandLog remembers the outcomes of the most recent commands, so that a command the
// controller resends (its ack was lost with a stream) is not carried out twice. It is owned
// by the connection loop and not safe for concurrent use.
type commandLog struct {
	capacity int
	order    *list.List // of commandOutcome, most recent first
	byID     map[string]*list.Element
}

func newCommandLog(capacity int) *commandLog {
	return &commandLog{capacity: capacity, order: list.New(), byID: make(map[string]*list.Element, capacity)}
}

// get returns the outcome of command id, if it is still remembered.
func (l *commandLog) get(id string) (commandOutcome, bool) {
	e, ok := l.byID[id]
	if !ok {
		return commandOutcome{}, false
	}
	l.order.MoveToFront(e)
	return e.Value.(commandOutcome), true
}

// add remembers an outcome, forgetting the least recently used one when full.
func (l *commandLog) add(o commandOutcome) {
	if e, ok := l.byID[o.id]; ok {
		e.Value = o
		l.order.MoveToFront(e)
		return
	}
	l.byID[o.id] = l.order.PushFront(o)
	if l.order.Len() > l.capacity {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.byID, last.Value.(commandOutcome).id)
	}
}

// handleCommand answers one command: stale epochs and duplicates are refused before the
// executor sees them, and every answer names the command and its epoch.
func (a *Agent) handleCommand(ctx context.Context, cmd *llmscalerv1.Command) *llmscalerv1.CommandAck {
	ack := &llmscalerv1.CommandAck{CommandId: cmd.GetCommandId(), Epoch: cmd.GetEpoch()}
	ok, highest, err := a.fence.Raise(cmd.GetEpoch())
	switch {
	case err != nil:
		// Not remembered: the controller may send it again once the disk is fixed.
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED
		ack.Message = fmt.Sprintf("agent cannot record epoch %d: %v", cmd.GetEpoch(), err)
		return ack
	case !ok:
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_STALE_EPOCH
		ack.Message = fmt.Sprintf("command epoch %d is older than epoch %d, the newest this agent has accepted", cmd.GetEpoch(), highest)
		return ack
	}
	if cmd.GetCommandId() == "" {
		// Without an id a resent command cannot be told from a new one.
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED
		ack.Message = "command_id is empty"
		return ack
	}
	if prev, ok := a.recent.get(cmd.GetCommandId()); ok {
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_DUPLICATE
		ack.Message = prev.message
		return ack
	}
	ack.Result, ack.Message = a.exec.execute(ctx, cmd)
	a.recent.add(commandOutcome{id: cmd.GetCommandId(), result: ack.Result, message: ack.Message})
	return ack
}
