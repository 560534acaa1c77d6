// Package catalog reads the agent's local catalog of model-server profiles.
//
// The controller can name only a profile and an instance id; it never sends a command line.
// The catalog file on the agent's host is the only source of the commands the agent runs, so
// whoever can write that file decides what runs on the node, and nobody else does.
//
// # File format
//
// The catalog is a YAML file (the agent's --catalog flag) with one key, profiles:
//
//	profiles:
//	  - name: fake-llm                 # required, letters, digits, '-', '.', '_'; unique
//	    command: ["llmscaler", "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}"]
//	                                   # required; argv, run without a shell
//	    env: {VLLM_LOGGING_LEVEL: INFO} # optional; values may use placeholders too
//	    dir: /opt/models               # optional working directory
//	    health_path: /health           # default /health
//	    metrics_path: /metrics         # default /metrics
//	    dialect: vllm                  # vllm | tgi | llamacpp | sglang; required
//	    gpus: 1                        # GPUs per instance, 0 for CPU-only; default 1
//	    gpu_memory_mib: 20000          # memory needed per GPU; default 0
//	    startup_timeout: 10m           # health must turn OK within it; default 10m
//	    drain_timeout: 60s             # default 60s
//	    stop_signal: SIGTERM           # SIGTERM | SIGINT | SIGQUIT | SIGHUP | SIGUSR1 | SIGUSR2; default SIGTERM
//	    stop_grace: 30s                # after the stop signal, SIGKILL the group; default 30s
//	    max_restarts: 5                # restarts after unexpected exits before FAILED; default 5
//	    max_in_flight: 256             # requests a router sends one instance at once; default 0 (no cap)
//
// Durations use Go syntax (90s, 10m, 1h30m). Unknown keys, duplicate keys and duplicate
// profile names are errors, and every error names the file, the line and the key, for example
//
//	catalog.yaml:12: profiles[1] "fake-llm": unknown key "comand"
//
// # Placeholders
//
// The arguments after command[0] and the values of env may use these placeholders, filled in
// for each instance when it starts:
//
//	{port}         the TCP port the agent picked for the instance
//	{host}         the address the server should bind (the agent's bind host, 127.0.0.1 by default)
//	{gpus}         the instance's node-local GPU indices, comma-separated ("" for none)
//	{instance_id}  the instance id the controller chose
//	{deployment}   the deployment the instance belongs to
//
// A placeholder is a name of letters, digits and '_' in braces; any other use of braces, such
// as a JSON argument '{"level": 3}', is left as it is. An unknown placeholder such as {prot}
// is a catalog error. command[0] and dir may not use placeholders.
//
// # Environment
//
// A model server inherits the agent's environment, then the profile's env on top, then
// CUDA_VISIBLE_DEVICES set to the instance's GPU indices: always, and to "" for an instance
// without GPUs so that a CPU-only server sees no GPU. A profile cannot set
// CUDA_VISIBLE_DEVICES itself.
//
// # Paths
//
// An absolute command[0] is run as it is. A command[0] without a '/' (such as "vllm") is
// looked up in the agent's PATH (not a PATH set in env) when the instance starts, not when
// the catalog is loaded, so installing the server later works. A relative command[0] with a '/' (such as
// "./bin/server" or "../venv/bin/vllm") and a relative dir are taken relative to the
// directory of the catalog file.
package catalog
