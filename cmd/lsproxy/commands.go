package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/proxy"
)

// The server-side commands: each one a constructor returning its cobra
// command; the work is in serve.go, dev.go, rekey.go.

func (c *cli) serveCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve [--config FILE]",
		Short: "Run the proxy (the default command)",
		Long: `Run the proxy: the proxied-traffic listener (LSPROXY_LISTEN) and the control
listener (LSPROXY_CONTROL_LISTEN: health, metrics, admin API, OAuth callback).
Stops gracefully on SIGTERM or SIGINT.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return c.runServe(path) },
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML configuration file")
	return cmd
}

func (c *cli) runServe(path string) error {
	cfg, code := loadConfig(config.ModeServe, path, c.stderr)
	if code != 0 {
		return fail(code, nil)
	}
	err := serve(c.ctx, cfg, c.stderr)
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fail(exitFailure, err)
}

func (c *cli) checkConfigCommand() *cobra.Command {
	var path string
	var print bool
	cmd := &cobra.Command{
		Use:   "check-config [--config FILE] [--print]",
		Short: "Validate the configuration and print every problem",
		Long: `Load the configuration exactly as serve would (defaults, the YAML file, LSPROXY_*
variables), validate it and print every problem at once, including LSPROXY_*
variables lsproxy does not know. Exit 1 on any problem.

--print writes the effective configuration as YAML with every secret redacted.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, code := loadConfig(config.ModeCheck, path, c.stderr)
			if print && code != exitUsage {
				if err := printConfig(c.stdout, cfg); err != nil {
					return fail(exitFailure, err)
				}
			}
			if code != 0 {
				return fail(code, nil)
			}
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(c.stderr, "lsproxy: warning:", w)
			}
			fmt.Fprintln(c.stdout, "configuration OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML configuration file")
	cmd.Flags().BoolVar(&print, "print", false, "print the effective configuration (secrets redacted)")
	return cmd
}

func (c *cli) devCommand() *cobra.Command {
	var listen, controlListen string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Sandbox: embedded store, built-in Lightspeed emulator, one demo tenant",
		Long: `Run a sandbox that needs nothing installed: the embedded store in a temporary
directory, the built-in Lightspeed emulator as provider and upstream, and one
demo tenant onboarded through the real authorize → callback flow. Prints the
curl line to try and the admin token.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			err := dev(c.ctx, listen, controlListen, c.stdout, c.stderr)
			if err == nil || errors.Is(err, context.Canceled) {
				return nil
			}
			return fail(exitFailure, err)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "proxied traffic listener (default LSPROXY_LISTEN or 127.0.0.1:8080)")
	cmd.Flags().StringVar(&controlListen, "control-listen", "", "control listener (default LSPROXY_CONTROL_LISTEN or 127.0.0.1:8081)")
	return cmd
}

func (c *cli) hashKeyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-key",
		Short: "Make a caller key and the hash to configure",
		Long: `Make a random caller key (give it to the client, which sends it in
Proxy-Authorization: Bearer <key>) and the hash to configure in client_keys /
LSPROXY_CLIENT_KEYS.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			key, hash, err := proxy.NewClientKey()
			if err != nil {
				return fail(exitFailure, err)
			}
			fmt.Fprintf(c.stdout, "key:   %s\nhash:  %s\nconfig entry (client_keys / LSPROXY_CLIENT_KEYS): <id>:%s:<tenant or prefix*>,...\n", key, hash, hash)
			return nil
		},
	}
}

func (c *cli) healthcheckCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "healthcheck [--config FILE]",
		Short: "Exit 0 when the control listener's /healthz answers 200",
		Long: `GET /healthz on the configured control listener (0.0.0.0 is dialled as
127.0.0.1) and exit 0 on 200, 1 otherwise: a container HEALTHCHECK that needs
no shell tools.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if code := healthcheck(path, c.stderr); code != 0 {
				return fail(code, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML configuration file")
	return cmd
}

func (c *cli) rekeyCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "rekey [--config FILE]",
		Short: "Re-encrypt every tenant record with the primary encryption key",
		Long: `Re-encrypt every tenant record with LSPROXY_ENCRYPTION_KEY, reading records
sealed with any key in LSPROXY_ENCRYPTION_KEYS. Safe while replicas run on
Redis; the embedded store needs serve stopped first. Exit 1 if any record
failed.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if code := rekey(c.ctx, path, c.stdout, c.stderr); code != 0 {
				return fail(code, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML configuration file")
	return cmd
}

func (c *cli) versionCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, revision and Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b := currentBuild()
			switch output {
			case "json":
				return writeJSONOut(c.stdout, b)
			case "text", "":
				fmt.Fprintln(c.stdout, "lsproxy", b.String())
				return nil
			}
			return fail(exitUsage, fmt.Errorf("--output %q: want text or json", output))
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// loadConfig loads and validates the configuration for mode; it prints
// every problem and returns a non-zero exit code on any.
func loadConfig(mode, path string, stderr io.Writer) (config.Config, int) {
	var problems []error
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		problems = append(problems, unjoin(err)...)
	}
	if !errors.Is(err, config.ErrFileUnusable) {
		problems = append(problems, cfg.Validate(mode)...)
	}
	switch mode {
	case config.ModeCheck:
		problems = append(problems, config.UnknownEnv(os.Environ(), clientEnv...)...)
	case config.ModeServe:
		// A name a small edit away from a known one is a typo
		// (LSPROXY_REDIS_ULR would leave the embedded store in use):
		// refused. Any other unknown name only warns (startupLog), so a
		// variable meant for a newer version does not stop an older
		// replica during a rolling upgrade.
		problems = append(problems, config.MistypedEnv(os.Environ(), clientEnv...)...)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "lsproxy: %d configuration problem(s):\n", len(problems))
		for _, p := range problems {
			fmt.Fprintln(stderr, "  -", p)
		}
		return cfg, exitFailure
	}
	return cfg, exitOK
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
func healthcheck(path string, stderr io.Writer) int {
	cfg, err := config.Load(path, os.Environ())
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

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // links keep their "&"
	if err := enc.Encode(v); err != nil {
		return fail(exitFailure, err)
	}
	return nil
}

// printConfig writes cfg as YAML in the config file's keys, secrets redacted
// (config.Config.Redacted), with the preset's values in effect where the
// configuration leaves them to the preset (URLs, scopes, client
// authentication, PKCE).
func printConfig(w io.Writer, cfg config.Config) error {
	b, err := yaml.Marshal(resolvePreset(cfg).Redacted())
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "# effective configuration (secrets redacted)")
	_, err = w.Write(b)
	return err
}

// resolvePreset fills what cfg leaves to its preset with the preset's
// values; an unknown provider or environment leaves cfg as it is
// (Validate reports those).
func resolvePreset(cfg config.Config) config.Config {
	preset, ep, err := auth.LookupPreset(cfg.Provider, cfg.Environment)
	if err != nil {
		return cfg
	}
	ep = overrideEndpoints(ep, cfg)
	cfg.UpstreamURL, cfg.AuthorizeURL, cfg.TokenURL = ep.API, ep.Authorize, ep.Token
	if cfg.Scopes == "" {
		cfg.Scopes = strings.Join(preset.Scopes, " ")
	}
	if cfg.ClientAuth == "" {
		cfg.ClientAuth = preset.ClientAuth
	}
	if cfg.PKCE == nil {
		pkce := preset.PKCE
		cfg.PKCE = &pkce
	}
	return cfg
}

// startupLog writes the build and every unknown LSPROXY_* variable (a
// warning each) to the log of serve.
func startupLog(log *zap.Logger) {
	b := currentBuild()
	log.Info("lsproxy starting", zap.String("version", b.Version), zap.String("revision", b.Revision),
		zap.String("goversion", b.GoVersion), zap.String("platform", b.Platform))
	for _, err := range config.UnknownEnv(os.Environ(), clientEnv...) {
		log.Warn("unknown environment variable ignored", zap.String("problem", strings.TrimPrefix(err.Error(), "config: ")))
	}
}
