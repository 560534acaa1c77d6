// Command llmscaler is the llmscaler tool: `llmscaler demo` runs a controller and fake-GPU
// agents in one process and shows the fleet. Later issues add sim, load and fakeserver.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/llmscaler/llmscaler/internal/buildinfo"
	"github.com/llmscaler/llmscaler/internal/cli"
)

const usage = `usage: llmscaler <command> [flags]

commands:
  bench     benchmark a real controller against thousands of simulated agents (bench fleet)
  certs     write a development CA and the certificates of a fleet's identities (mutual TLS)
  demo      run a controller (embedded etcd) and fake-GPU agents in one process and show the fleet
  fakeserver serve a simulated OpenAI-compatible LLM server with vLLM metrics (no GPU needed)
  load      send open-loop load (Poisson, a schedule or a trace) to a server, a deployment or a router
  sim       replay a workload through the scaling policies on simulated replicas and compare them
  version   print the version

Run 'llmscaler <command> -h' for a command's flags.
`

func main() { cli.Main("llmscaler", run) }

func run(ctx context.Context, args []string) error {
	if len(args) < 1 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "bench":
		return runBench(ctx, args[1:], os.Stdout)
	case "certs":
		return runCerts(ctx, args[1:], os.Stdout)
	case "demo":
		return runDemo(ctx, args[1:], os.Stdout)
	case "fakeserver":
		return runFakeserver(ctx, args[1:], os.Stdout)
	case "load":
		return runLoad(ctx, args[1:], os.Stdout)
	case "sim":
		return runSim(ctx, args[1:], os.Stdout)
	case "version", "--version", "-version":
		fmt.Println(buildinfo.Version())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
