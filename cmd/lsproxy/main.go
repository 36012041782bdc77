// Command lsproxy is a reverse proxy that injects Lightspeed OAuth2 bearer
// tokens per tenant. This package is wiring only.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/proxy"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `lsproxy — a Lightspeed OAuth2 token-injecting reverse proxy

Usage:
  lsproxy [serve] [--config FILE]      run the proxy (the default)
  lsproxy dev                          sandbox: embedded store, built-in emulator, demo tenant
  lsproxy check-config [--config FILE] validate configuration, print every problem
  lsproxy hash-key                     make a caller key and the hash to configure
  lsproxy healthcheck [--config FILE]  exit 0 when the control listener's /healthz answers 200
  lsproxy rekey [--config FILE]        re-encrypt every tenant record with the primary encryption key
  lsproxy tenants import|export ...    move tenants in (NDJSON, admin API) and out (store, 0600 file)
  lsproxy version                      print the version

Configuration: defaults, then the YAML file, then LSPROXY_* environment variables.
See config.example.yaml.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case "serve":
		cfg, code := loadConfig("serve", args, stderr)
		if code != 0 {
			return code
		}
		return exitCode(serve(ctx, cfg, stderr), stderr)
	case "check-config":
		_, code := loadConfig("check", args, stderr)
		if code == 0 {
			fmt.Fprintln(stdout, "configuration OK")
		}
		return code
	case "dev":
		return exitCode(dev(ctx, args, stdout, stderr), stderr)
	case "hash-key":
		key, hash, err := proxy.NewClientKey()
		if err != nil {
			return exitCode(err, stderr)
		}
		fmt.Fprintf(stdout, "key:   %s\nhash:  %s\nconfig entry (client_keys / LSPROXY_CLIENT_KEYS): <id>:%s:<tenant or prefix*>,...\n", key, hash, hash)
		return 0
	case "healthcheck":
		return healthcheck(args, stderr)
	case "rekey":
		return rekeyCommand(ctx, args, stdout, stderr)
	case "tenants":
		if code, ok := tenantsMigrate(ctx, args, stdout, stderr); ok {
			return code
		}
		tenantsUsage(stderr)
		return 2
	case "version":
		fmt.Fprintln(stdout, "lsproxy", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "lsproxy: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	fmt.Fprintln(stderr, "lsproxy:", err)
	return 1
}

// loadConfig parses --config, loads and validates; it prints every problem
// and returns a non-zero exit code on any.
func loadConfig(mode string, args []string, stderr io.Writer) (config.Config, int) {
	fs := flag.NewFlagSet("lsproxy "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lsproxy: unexpected arguments: %v\n", fs.Args())
		return config.Config{}, 2
	}
	var problems []error
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		problems = append(problems, unjoin(err)...)
		if errors.Is(err, config.ErrFile) {
			cfg = config.Config{}
		}
	}
	if !errors.Is(err, config.ErrFile) {
		problems = append(problems, cfg.Validate(mode)...)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "lsproxy: %d configuration problem(s):\n", len(problems))
		for _, p := range problems {
			fmt.Fprintln(stderr, "  -", p)
		}
		return cfg, 1
	}
	return cfg, 0
}

func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %d", resp.Request.URL.Path, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// healthcheck probes /healthz on the configured control listener, for
// container HEALTHCHECKs that have no shell tools.
func healthcheck(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lsproxy healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy healthcheck:", err)
		return 1
	}
	host, port, err := net.SplitHostPort(cfg.ControlListen)
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy healthcheck:", err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client, scheme := &http.Client{Timeout: 3 * time.Second}, "http"
	if cfg.ControlTLSCertFile != "" {
		client.Transport, scheme = healthcheckTLS(), "https"
	}
	resp, err := client.Get(scheme + "://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "lsproxy healthcheck: /healthz answered", resp.StatusCode)
		return 1
	}
	return 0
}

// unjoin splits an errors.Join into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
