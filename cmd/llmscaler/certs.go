package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/pki"
)

// runCerts writes a development CA and the certificates and keys of a fleet's identities.
func runCerts(_ context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler certs", flag.ContinueOnError)
	dir := fs.String("out", "", "directory to write ca.crt, ca.key and NAME.crt, NAME.key for controller, router, admin, readonly and node-<id> (created 0700)")
	var nodes, hosts flagfile.List
	fs.Var(&nodes, "nodes", "comma-separated node ids to make node-<id> certificates for (spiffe://llmscaler/node/<id>)")
	fs.Var(&hosts, "hosts", "comma-separated host names and IP addresses the controllers are dialled at, besides localhost, 127.0.0.1 and ::1")
	days := fs.Int("days", 365, "days the certificates are valid")
	force := fs.Bool("force", false, "overwrite an existing set (a new CA: every certificate of the old one stops working)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return errors.New("--out: required (the directory to write the certificates to)")
	}
	if *days <= 0 {
		return fmt.Errorf("--days %d: must be positive", *days)
	}
	paths, err := pki.Write(pki.Set{Dir: *dir, Nodes: nodes, Hosts: hosts, Days: *days, Force: *force})
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(out, p)
	}
	ca := filepath.Join(*dir, "ca.crt")
	fmt.Fprintf(out, "\nA development CA and %d certificates valid for %d days (keys 0600). Each daemon takes\n", len(paths)/2-1, *days)
	fmt.Fprintf(out, "  --tls-ca %s --tls-cert %s --tls-key %s\n", ca, filepath.Join(*dir, "NAME.crt"), filepath.Join(*dir, "NAME.key"))
	fmt.Fprintf(out, "with NAME controller, router or node-<id>; people take admin or readonly, with grpcurl:\n")
	fmt.Fprintf(out, "  grpcurl -cacert %s -cert %s -key %s 127.0.0.1:7400 list\n", ca, filepath.Join(*dir, "admin.crt"), filepath.Join(*dir, "admin.key"))
	return nil
}
