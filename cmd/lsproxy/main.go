// Command lsproxy is a reverse proxy that injects Lightspeed OAuth2 bearer
// tokens per tenant. This package is wiring only: the command tree (cobra)
// and how each command reaches the packages that do the work.
//
// Layout: main.go is the root command, the exit codes and the plumbing;
// commands.go the server-side commands (serve, dev, check-config, ...);
// tenants.go the `tenants` tree with its admin API client, and one
// tenants_<verb>.go file per `tenants` subcommand, each registering itself
// with registerTenantsCommand from an init function: tenants_list.go,
// tenants_get.go, tenants_authorize.go, tenants_refresh.go,
// tenants_retry.go, tenants_delete.go, tenants_ratelimit.go (reset-rate-limit),
// tenants_revoke_links.go (revoke-links, accept-candidate), tenants_import.go,
// tenants_export.go, and tenants_migrate.go (the line format import and
// export share). serve.go runs the proxy (tls.go its certificate reloads,
// tracing.go the OTLP setup, ratelimit.go the governor's wiring); dev.go is
// the sandbox; rekey.go and version.go the commands of those names;
// webhooks_cli.go the `webhooks` tree (the same admin client), webhooks.go
// the server's webhook notifier and console OIDC wiring.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes. Scripts may rely on them (docs/operations.md, "CLI").
const (
	exitOK          = 0 // success
	exitFailure     = 1 // the command failed: configuration problems, a server error, a runtime error
	exitUsage       = 2 // bad command line: unknown command or flag, missing argument
	exitNotFound    = 3 // no such tenant
	exitAuth        = 4 // the admin API refused the token, or is disabled
	exitUnavailable = 5 // lsproxy, its store or the token endpoint is unavailable; retry later
	exitConflict    = 6 // the tenant needs re-authorization, or changed concurrently
)

// exitError carries a command's exit code. A command's RunE returns one
// (via fail); any other error comes from cobra itself (flags, arguments,
// unknown command) and is a usage error.
type exitError struct {
	code int
	err  error // nil: nothing more to print
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// fail returns err as an exitError with code; a nil err still exits with
// code (the command printed its own message).
func fail(code int, err error) error { return &exitError{code: code, err: err} }

// cli is what every command shares: the signal context and the outputs.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr}
	root := c.rootCommand()
	root.SetArgs(compatArgs(args))
	err := root.ExecuteContext(ctx)
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.err != nil && !errors.Is(ee.err, context.Canceled) {
			fmt.Fprintln(stderr, "lsproxy:", ee.err)
		}
		if errors.Is(ee.err, context.Canceled) && ee.code == exitFailure {
			return exitOK // stopped by a signal
		}
		return ee.code
	default:
		fmt.Fprintf(stderr, "lsproxy: %v\nRun 'lsproxy --help' for usage.\n", err)
		return exitUsage
	}
}

// unknownSubcommand is the Args check of a command whose arguments can
// only be subcommands: an unknown one is refused with the closest names
// ("did you mean ...?").
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return errors.New(msg)
}

// compatArgs accepts the single-dash long flags of the flag package that
// earlier versions used (-config FILE, -listen ADDR); pflag would read them
// as bundles of one-letter flags.
func compatArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "-config", "-listen", "-control-listen":
			a = "-" + a
		}
		out[i] = a
	}
	return out
}

const rootLong = `lsproxy is a reverse proxy that injects Lightspeed OAuth2 bearer tokens per
tenant (X-Tenant header). Tokens live in Redis or an embedded store and are
refreshed under a distributed lock.

Without a command, lsproxy runs serve.

Configuration: built-in defaults, then the YAML file (--config), then LSPROXY_*
environment variables. See config.example.yaml and docs/operations.md.`

const exitCodesHelp = `
Exit codes:
  0  success
  1  the command failed (configuration problems, server error)
  2  bad command line
  3  no such tenant
  4  the admin API refused the token or is disabled
  5  lsproxy, its store or the token endpoint is unavailable; retry later
  6  the tenant needs re-authorization, or changed concurrently
`

func (c *cli) rootCommand() *cobra.Command {
	var configPath string
	root := &cobra.Command{
		Use:           "lsproxy",
		Short:         "A Lightspeed OAuth2 token-injecting reverse proxy",
		Long:          rootLong,
		Version:       currentBuild().String(),
		Args:          unknownSubcommand,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runServe(configPath)
		},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetVersionTemplate("lsproxy {{.Version}}\n")
	root.SetUsageTemplate(root.UsageTemplate() + exitCodesHelp)
	root.Flags().StringVar(&configPath, "config", "", "YAML configuration file (for the default serve)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(
		c.serveCommand(),
		c.devCommand(),
		c.checkConfigCommand(),
		c.hashKeyCommand(),
		c.healthcheckCommand(),
		c.rekeyCommand(),
		c.versionCommand(),
		c.tenantsCommand(),
		c.webhooksCommand(),
	)
	return root
}
