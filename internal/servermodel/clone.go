package servermodel

import "slices"

// Clone returns an engine that evolves exactly as e does under the same Submits, Aborts and
// Steps, and independently of it: the simulator's oracle checkpoints a whole fleet and tries
// several futures from one point.
//
// It copies every field and then gives the clone its own copy of every slice, so a field added
// to Engine is copied by value without a change here; a new slice or map field must be added
// below (TestCloneSharesNothing fails until it is).
func (e *Engine) Clone() *Engine {
	c := *e
	// Only the live part of the waiting queue: what was admitted is dead weight.
	c.waiting = slices.Clone(e.waiting[e.head:])
	c.head = 0
	// Slots are copied whole, free ones included, because prefilling, finishing and the
	// batch's links name them by index.
	c.slots = slices.Clone(e.slots)
	c.free = slices.Clone(e.free)
	c.prefilling = slices.Clone(e.prefilling)
	c.finishing = slices.Clone(e.finishing)
	// The events of the last Step belong to its caller; the clone's first Step makes its own.
	c.events = nil
	return &c
}
