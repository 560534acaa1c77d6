// Package scrape reads the Prometheus metrics endpoint of a model server (vLLM, TGI, llama.cpp
// or SGLang) and turns successive scrapes of one instance into the engine-neutral
// llmscalerv1.QueueMetrics the agent reports.
//
// Gauges (waiting and running requests, KV-cache usage) are taken as the server prints them.
// Everything else the servers export is cumulative, so latencies and rates describe the
// interval between two successful scrapes: token and request rates come from counter
// deltas, and p50/p95 latencies from bucket-wise histogram deltas, interpolated inside the
// bucket the way Prometheus' histogram_quantile does.
//
// A body that does not parse, is cut short, or is too large is an error and leaves the
// Scraper as it was, so the next good scrape is compared with the last good one.
//
// Parsing uses github.com/prometheus/common/expfmt, the reference parser of the text format.
package scrape
