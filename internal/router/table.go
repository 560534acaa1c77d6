package router

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Endpoint is one instance of a deployment that the router may send requests to.
type Endpoint struct {
	// ID names the instance; it is the key that keeps counts across SetDeployments calls.
	ID string
	// URL is the base of the instance's OpenAI API, such as http://127.0.0.1:8001; the
	// request's path (/v1/chat/completions) is appended to it.
	URL string
	// MaxInFlight is the most requests the router sends it at once; 0 means no limit.
	// Requests beyond it wait in the router, not in the engine.
	MaxInFlight int
	// KVCache is the share of its KV cache in use, 0-1, from its latest report; it breaks
	// ties between instances with as many outstanding requests.
	KVCache float64
}

// Deployment is one entry of the routing table: the models it serves and where.
type Deployment struct {
	// Name names the deployment in stats and metrics.
	Name string
	// Models are the served model names; a request's "model" picks the deployment that
	// lists it. A model belongs to one deployment.
	Models []string
	// Endpoints are its ready instances. None: requests wait for one (scale from zero).
	Endpoints []Endpoint
	// ColdStartWait is how long a request waits when the deployment has no endpoint; 0
	// means Config.DefaultColdStartWait, negative means not at all.
	ColdStartWait time.Duration
	// MaxQueue bounds the requests waiting in the router for the deployment; 0 means
	// Config.DefaultMaxQueue, negative means no queue: a request that finds no free
	// instance is answered 503 at once.
	MaxQueue int
}

// Why a request got no instance.
var (
	errQueueFull = errors.New("queue full")
	errTimeout   = errors.New("timed out waiting for an instance")
	errGone      = errors.New("deployment removed")
)

// validateTable checks a whole routing table.
func validateTable(ds []Deployment) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w table: "+format, append([]any{ErrInvalid}, args...)...))
	}
	names := map[string]bool{}
	models := map[string]string{}
	for i, d := range ds {
		if d.Name == "" {
			bad("deployments[%d]: Name is required", i)
		} else if names[d.Name] {
			bad("deployment %q: listed twice", d.Name)
		}
		names[d.Name] = true
		if len(d.Models) == 0 {
			bad("deployment %q: Models is empty", d.Name)
		}
		for _, m := range d.Models {
			switch other, dup := models[m]; {
			case m == "":
				bad("deployment %q: empty model name", d.Name)
			case dup:
				bad("deployment %q: model %q is also served by deployment %q", d.Name, m, other)
			}
			models[m] = d.Name
		}
		ids := map[string]bool{}
		for j, ep := range d.Endpoints {
			if ep.ID == "" {
				bad("deployment %q: endpoints[%d]: ID is required", d.Name, j)
			} else if ids[ep.ID] {
				bad("deployment %q: endpoint %q listed twice", d.Name, ep.ID)
			}
			ids[ep.ID] = true
			if _, err := parseBase(ep.URL); err != nil {
				bad("deployment %q: endpoint %q: URL %q: %v", d.Name, ep.ID, ep.URL, err)
			}
			if ep.MaxInFlight < 0 {
				bad("deployment %q: endpoint %q: MaxInFlight %d: must not be negative", d.Name, ep.ID, ep.MaxInFlight)
			}
			if math.IsNaN(ep.KVCache) || ep.KVCache < 0 || ep.KVCache > 1 {
				bad("deployment %q: endpoint %q: KVCache %v: must be within 0-1", d.Name, ep.ID, ep.KVCache)
			}
		}
	}
	return errors.Join(errs...)
}

func parseBase(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return nil, errors.New("host is required")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("must have no query or fragment")
	}
	return u, nil
}

// instance is the router's state of one endpoint. Fields below mu of its deployment are
// guarded by it.
type instance struct {
	id     string
	idHash uint64
	base   atomic.Pointer[url.URL]

	maxInFlight  int
	kv           float64
	outstanding  int
	ejectedUntil time.Time
	removed      bool // no longer in the table: draining
	total, last  Counters
	ttft, e2e    reservoir
}

func (in *instance) hasRoom() bool { return in.maxInFlight == 0 || in.outstanding < in.maxInFlight }

func (in *instance) ejected(now time.Time) bool { return now.Before(in.ejectedUntil) }

// affinity is a request's preference for an instance; ok is false for none.
type affinity struct {
	hash uint64
	ok   bool
}

func hashBytes(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

// mix is splitmix64's finaliser: it makes hash ^ idHash a fair score for rendezvous hashing.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// grant is what a waiting request is handed: an instance whose slot it now holds, or why
// it gets none.
type grant struct {
	in  *instance
	err error
}

// waiter is a request queued in the router.
type waiter struct {
	aff     affinity
	exclude *instance // the instance a retry must avoid
	ready   chan grant
	elem    *list.Element
}

// deployment is the router's state of one deployment, kept across table updates so that
// counts, queues and in-flight requests survive them.
type deployment struct {
	name    string
	r       *Router
	log     hclog.Logger
	created int64 // unix seconds, for /v1/models

	demandRunning atomic.Bool

	mu            sync.Mutex
	removed       bool
	models        []string
	coldStartWait time.Duration
	maxQueue      int
	live          []*instance          // in the table, in table order
	byID          map[string]*instance // live and draining
	queue         list.List            // of *waiter, FIFO
	active        int                  // arrived and not finished
	rr            int                  // rotates ties between equal instances
	total, last   Counters
	ttft, e2e     reservoir
}

func newDeployment(r *Router, name string) *deployment {
	return &deployment{
		name:    name,
		r:       r,
		log:     r.log.With("deployment", name),
		created: r.cfg.Now().Unix(),
		byID:    map[string]*instance{},
	}
}

// update applies the deployment's new table entry.
func (d *deployment) update(dep Deployment) {
	cfg := d.r.cfg
	d.mu.Lock()
	defer d.mu.Unlock()
	d.removed = false
	d.models = slices.Clone(dep.Models)
	d.coldStartWait = dep.ColdStartWait
	if d.coldStartWait == 0 {
		d.coldStartWait = cfg.DefaultColdStartWait
	}
	d.maxQueue = dep.MaxQueue
	if d.maxQueue == 0 {
		d.maxQueue = cfg.DefaultMaxQueue
	}
	live := make([]*instance, 0, len(dep.Endpoints))
	keep := map[*instance]bool{}
	for _, ep := range dep.Endpoints {
		in := d.byID[ep.ID]
		if in == nil {
			in = &instance{id: ep.ID, idHash: hashBytes([]byte(ep.ID))}
			d.byID[ep.ID] = in
			d.log.Debug("instance added", "instance_id", ep.ID, "url", ep.URL)
		} else if in.removed {
			d.log.Debug("instance back", "instance_id", ep.ID)
		}
		base, _ := parseBase(ep.URL) // validated
		in.base.Store(base)
		in.maxInFlight, in.kv, in.removed = ep.MaxInFlight, ep.KVCache, false
		live = append(live, in)
		keep[in] = true
	}
	for _, in := range d.live {
		if !keep[in] {
			in.removed = true
			d.log.Debug("instance removed", "instance_id", in.id, "in_flight", in.outstanding)
			d.forgetIfDoneLocked(in)
		}
	}
	d.live = live
	d.dispatchLocked(cfg.Now())
}

// remove takes the deployment out of the table: no new request is routed to it, waiting
// ones are answered, in-flight ones finish.
func (d *deployment) remove() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return
	}
	d.removed = true
	for _, in := range d.live {
		in.removed = true
		d.forgetIfDoneLocked(in)
	}
	d.live = nil
	for e := d.queue.Front(); e != nil; e = d.queue.Front() {
		d.queue.Remove(e)
		e.Value.(*waiter).ready <- grant{err: errGone}
	}
	d.log.Debug("deployment removed", "in_flight", d.active)
}

// forgetIfDoneLocked drops a drained, removed instance when no one reads Stats; otherwise
// Stats drops it once it has reported it.
func (d *deployment) forgetIfDoneLocked(in *instance) {
	if in.removed && in.outstanding == 0 && !d.r.statsCalled.Load() {
		d.forgetLocked(in)
	}
}

func (d *deployment) forgetLocked(in *instance) {
	delete(d.byID, in.id)
	d.r.metrics.forgetInstance(d.name, in.id)
}

// drained reports whether a removed deployment has nothing left to finish or report.
func (d *deployment) drainedLocked() bool {
	return d.removed && d.active == 0 && len(d.byID) == 0
}

// arrive counts a request that was routed to the deployment.
func (d *deployment) arrive() {
	d.mu.Lock()
	d.total.Arrivals++
	d.active++
	d.mu.Unlock()
}

// acquire finds an instance for a request and takes a slot on it, waiting in the
// deployment's queue while none is free. exclude, when set, is an instance a retry must
// avoid; a retry waits at the front of the queue since it has waited its turn already.
func (d *deployment) acquire(ctx context.Context, aff affinity, exclude *instance) (*instance, error) {
	cfg := d.r.cfg
	now := cfg.Now()
	d.mu.Lock()
	if d.removed {
		d.mu.Unlock()
		return nil, errGone
	}
	if d.queue.Len() == 0 {
		if in := d.pickLocked(aff, exclude, now); in != nil {
			d.startLocked(in)
			d.mu.Unlock()
			return in, nil
		}
	}
	cold := len(d.live) == 0
	wait := cfg.QueueTimeout
	if cold {
		wait = d.coldStartWait
	}
	if d.queue.Len() >= d.maxQueue || wait <= 0 {
		d.mu.Unlock()
		if cold && exclude == nil {
			d.demand()
		}
		if wait <= 0 {
			return nil, errTimeout
		}
		return nil, errQueueFull
	}
	w := &waiter{aff: aff, exclude: exclude, ready: make(chan grant, 1)}
	if exclude != nil {
		w.elem = d.queue.PushFront(w)
	} else {
		w.elem = d.queue.PushBack(w)
	}
	d.dispatchLocked(now)
	d.mu.Unlock()
	if cold && exclude == nil {
		d.demand()
	}

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	select {
	case g := <-w.ready:
		return g.in, g.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = errTimeout
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case g := <-w.ready:
		// Granted while giving up: take it; a cancelled request frees it at once.
		return g.in, g.err
	default:
	}
	d.queue.Remove(w.elem)
	return nil, err
}

// demand tells Config.OnDemand that the deployment has requests and no endpoint.
func (d *deployment) demand() {
	f := d.r.cfg.OnDemand
	if f == nil || !d.demandRunning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.demandRunning.Store(false)
		f(d.name)
	}()
}

func (d *deployment) startLocked(in *instance) {
	in.outstanding++
	in.total.Arrivals++
}

// dispatchLocked hands free slots to waiting requests, first come first served.
func (d *deployment) dispatchLocked(now time.Time) {
	for e := d.queue.Front(); e != nil; {
		next := e.Next()
		w := e.Value.(*waiter)
		in := d.pickLocked(w.aff, w.exclude, now)
		if in == nil {
			if w.exclude == nil {
				return // no slot for anyone
			}
			e = next
			continue
		}
		d.queue.Remove(e)
		d.startLocked(in)
		w.ready <- grant{in: in}
		e = next
	}
}

// pickLocked chooses an instance with a free slot, or nil.
//
// Instances that are ejected are used only when every other candidate is ejected too, so
// ejection never leaves a deployment without instances. With an affinity, the preferred
// instances are tried in rendezvous-hash order (highest score of mix(key ^ id) first: the
// "ring" of consistent hashing), each only while taking the request keeps its outstanding
// count within ceil(c x (total + 1) / n) (consistent hashing with bounded load, Mirrokni
// et al. 2018). Otherwise, and when no preferred instance qualifies, the instance with the
// fewest outstanding requests wins, ties going to the lower KV-cache use, then in turn.
func (d *deployment) pickLocked(aff affinity, exclude *instance, now time.Time) *instance {
	healthy := false
	for _, in := range d.live {
		if in != exclude && !in.ejected(now) {
			healthy = true
			break
		}
	}
	usable := func(in *instance) bool { return in != exclude && (!healthy || !in.ejected(now)) }

	if aff.ok {
		n, total := 0, 0
		for _, in := range d.live {
			if usable(in) {
				n++
				total += in.outstanding
			}
		}
		if n > 0 {
			bound := int(math.Ceil(d.r.cfg.AffinityLoadFactor * float64(total+1) / float64(n)))
			var best *instance
			var bestScore uint64
			for _, in := range d.live {
				if !usable(in) || !in.hasRoom() || in.outstanding+1 > bound {
					continue
				}
				if s := mix(aff.hash ^ in.idHash); best == nil || s > bestScore {
					best, bestScore = in, s
				}
			}
			if best != nil {
				return best
			}
		}
	}

	n := len(d.live)
	if n == 0 {
		return nil
	}
	start := d.rr % n
	d.rr++
	var best *instance
	for i := range n {
		in := d.live[(start+i)%n]
		if !usable(in) || !in.hasRoom() {
			continue
		}
		if best == nil || in.outstanding < best.outstanding ||
			(in.outstanding == best.outstanding && in.kv < best.kv) {
			best = in
		}
	}
	return best
}

// hasOther reports whether a retry could go somewhere other than in.
func (d *deployment) hasOther(in *instance) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range d.live {
		if o != in {
			return true
		}
	}
	return false
}

// attemptEnd is how one attempt on an instance ended.
type attemptEnd struct {
	failed    bool // connection error, 5xx or broken response: eject the instance
	cancelled bool // the client went away
	measured  bool // a complete answer below 400: its latencies count
	tokens    uint64
	ttft, e2e time.Duration
	err       error // what failed, for the log
}

// endAttempt frees in's slot, counts the attempt and hands the slot on.
func (d *deployment) endAttempt(in *instance, a attemptEnd) {
	cfg := d.r.cfg
	now := cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	in.outstanding--
	in.total.Finished++
	in.total.CompletionTokens += a.tokens
	switch {
	case a.failed:
		in.total.Errors++
	case a.cancelled:
		in.total.Cancelled++
	}
	if a.measured {
		in.ttft.add(a.ttft)
		in.e2e.add(a.e2e)
	}
	if a.failed && !in.removed && len(d.live) > 1 && cfg.EjectFor > 0 {
		in.ejectedUntil = now.Add(cfg.EjectFor)
		d.r.metrics.ejections.WithLabelValues(d.name, in.id).Inc()
		d.log.Warn("instance ejected", "instance_id", in.id, "for", cfg.EjectFor, "error", a.err)
		// Waiters held back only by the ejection get a look when it ends.
		time.AfterFunc(cfg.EjectFor, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.dispatchLocked(cfg.Now())
		})
	}
	d.forgetIfDoneLocked(in)
	d.dispatchLocked(now)
}

// outcome is how a request ended, as its deployment counts it.
type outcome struct {
	status    int  // what the client got; 499 when it went away first
	rejected  bool // 503 for want of an instance
	failed    bool // 5xx other than rejection, or a broken response
	cancelled bool
	retried   bool
	abort     bool // the response broke off after its start reached the client
	measured  bool
	tokens    uint64
	ttft, e2e time.Duration
}

// finish counts a request that arrive counted.
func (d *deployment) finish(o outcome) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.active--
	d.total.Finished++
	d.total.CompletionTokens += o.tokens
	switch {
	case o.rejected:
		d.total.Rejected++
	case o.failed:
		d.total.Errors++
	case o.cancelled:
		d.total.Cancelled++
	}
	if o.retried {
		d.total.Retries++
	}
	if o.measured {
		d.ttft.add(o.ttft)
		d.e2e.add(o.e2e)
	}
}
