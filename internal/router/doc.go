// Package router is the data plane of an OpenAI-compatible request router: it sends each
// request to an instance of the deployment that serves its model, balancing by the
// requests the router itself has outstanding on each instance, and measures every request
// so that the controller can scale, from zero too. It speaks plain HTTP. Whoever embeds it
// feeds it the routing table (SetDeployments, on every change from the controller's
// endpoint watch) and ships its figures (Stats, once per report interval).
//
// Routes:
//
//	POST /v1/completions        forwarded to an instance
//	POST /v1/chat/completions   forwarded to an instance
//	GET  /v1/models             the models of all deployments, in OpenAI's list shape
//
// and MetricsHandler serves Prometheus metrics from a registry of the router's own.
//
// Errors the router makes itself have OpenAI's shape, {"error": {"message", "type",
// "param", "code"}}: 400 for a body that is not a JSON object or has no string "model",
// 404 for a model no deployment serves, 413 for a body over Config.MaxBodyBytes, 502 when
// an instance could not be reached, 503 with Retry-After when no instance was free in time
// or the queue was full.
//
// Bodies. The router reads the body only up to the top-level "model" (by a scanner that
// keeps what it read as the one copy, however long a prompt comes before it), then on to
// Config.ReplayBytes, and forwards what it holds followed by the rest of the client's
// stream; a long prompt is never held twice. Answers, SSE streams included, pass through
// read by read, flushed each time, with status and headers (hop-by-hop ones dropped).
//
// Balancing. Each request goes to the instance with the fewest requests outstanding from
// this router, ties going to the lower KV-cache use. An instance's MaxInFlight caps them:
// past it requests wait in the router, first come first served per deployment, and are
// dispatched as slots free. A deployment without endpoints holds requests up to its
// ColdStartWait (the scale-from-zero case, reported by Stats and Config.OnDemand); a full
// queue or a wait that runs out is answered 503. A client that goes away while waiting
// leaves the queue. Affinity (a session header, or a hash of the prompt's first bytes)
// picks a preferred instance by rendezvous hashing with bounded load, and gives way to
// load; see Config.AffinityLoadFactor.
//
// Failures. A connection failure, or a 5xx before any byte reached the client, is retried
// once on another instance when the body can be sent again: it was held whole, or the
// failed attempt consumed none of what was not held. Otherwise a connection failure is
// answered 502 and a 5xx is passed through. An instance that fails is left out of
// balancing for Config.EjectFor, unless it is the deployment's only one. A response that
// breaks off midway ends the client's connection, so that it is not taken for complete.
//
// Measurement. Per deployment and per instance the router counts arrivals, waiting and
// in-flight requests, finished, failed, rejected and cancelled ones and output tokens, and
// samples TTFT (to the first byte of the answer; to the first SSE data event of a stream)
// and end-to-end latency. Output tokens are usage.completion_tokens of a JSON answer; a
// stream's last usage.completion_tokens when it reports one, else its number of SSE data
// events: an estimate, since an event may carry several tokens or none (a chat stream's
// first event carries the role).
package router
