package controller

import (
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// nodeDesired is what the leader wants of one node in this term, the state it sends that
// node whole (go-control-plane's snapshot per node): the instances that should run there and
// those that should drain. Every change raises version; the node's stream sends the latest
// version on every change and whenever a new stream opens, so a lost or replaced stream
// loses nothing and a change made while the node was away reaches it on reconnect.
type nodeDesired struct {
	version   uint64
	instances map[string]*desiredInstance
	drain     map[string]*drainEntry
}

// desiredInstance is one instance that should run on a node.
type desiredInstance struct {
	start *llmscalerv1.StartInstance
	// since is when it was placed or adopted.
	since time.Time
	// seen: the node has reported it. Until then it is a pending start whose GPUs are
	// held and which counts towards its deployment.
	seen bool
}

// drainEntry is one instance that should stop on a node.
type drainEntry struct {
	stop *llmscalerv1.StopInstance
	// since is when it was listed.
	since time.Time
	// seen: the node has reported it (so once it is no longer reported, it is gone). A start
	// given up before it was ever reported is listed unseen, in case it turns up late.
	seen bool
}

func newNodeDesired() *nodeDesired {
	return &nodeDesired{version: 1, instances: map[string]*desiredInstance{}, drain: map[string]*drainEntry{}}
}

// adopt lists the instances a node reports on connecting that the leader does not know yet:
// those that run (or failed) as instances, those already on their way out as drains. A new
// leader thus takes over what runs instead of stopping it by omission. It reports whether
// anything changed.
func (nd *nodeDesired) adopt(reported []*llmscalerv1.InstanceStatus, now time.Time) bool {
	changed := false
	for _, in := range reported {
		id := in.GetInstanceId()
		if di := nd.instances[id]; di != nil {
			di.seen = true
			continue
		}
		if de := nd.drain[id]; de != nil {
			de.seen = true
			continue
		}
		switch in.GetPhase() {
		case llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING, llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED:
			nd.drain[id] = &drainEntry{stop: &llmscalerv1.StopInstance{InstanceId: id, Reason: "stopping when this leader took over"}, since: now, seen: true}
		default:
			nd.instances[id] = &desiredInstance{start: &llmscalerv1.StartInstance{
				InstanceId: id, Deployment: in.GetDeployment(), Profile: in.GetProfile(), GpuIndices: slices.Clone(in.GetGpuIndices()),
			}, since: now, seen: true}
		}
		changed = true
	}
	if changed {
		nd.version++
	}
	return changed
}

// place adds a start.
func (nd *nodeDesired) place(s *llmscalerv1.StartInstance, now time.Time) {
	nd.instances[s.GetInstanceId()] = &desiredInstance{start: s, since: now}
	nd.version++
}

// stop moves an instance from running to draining, with the reason the agent logs; seen
// says whether the node has reported it.
func (nd *nodeDesired) stop(id, reason string, seen bool, now time.Time) {
	delete(nd.instances, id)
	nd.drain[id] = &drainEntry{stop: &llmscalerv1.StopInstance{InstanceId: id, Reason: reason}, since: now, seen: seen}
	nd.version++
}

// forget drops an instance from both lists.
func (nd *nodeDesired) forget(id string) {
	_, a := nd.instances[id]
	_, b := nd.drain[id]
	if a || b {
		delete(nd.instances, id)
		delete(nd.drain, id)
		nd.version++
	}
}

// state is the message for the node's stream.
func (nd *nodeDesired) state(epoch int64) *llmscalerv1.DesiredState {
	ds := &llmscalerv1.DesiredState{Epoch: epoch, Version: nd.version}
	for _, id := range slices.Sorted(maps.Keys(nd.instances)) {
		ds.Instances = append(ds.Instances, proto.Clone(nd.instances[id].start).(*llmscalerv1.StartInstance))
	}
	for _, id := range slices.Sorted(maps.Keys(nd.drain)) {
		ds.Drain = append(ds.Drain, proto.Clone(nd.drain[id].stop).(*llmscalerv1.StopInstance))
	}
	return ds
}
