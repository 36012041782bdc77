package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The `tenants` tree talks to a running lsproxy's admin API. Each
// subcommand lives in its own tenants_<verb>.go file and registers its
// constructor from an init function:
//
//	func init() { registerTenantsCommand(tenantsListCommand) }
//
// A constructor gets the shared *tenantsCLI (admin client, output format)
// whose fields are filled before the subcommand runs.

// Environment variables of the tenants commands (client side; not
// configuration options of the server, but known to the unknown-variable
// check).
const (
	envAdminURL       = "LSPROXY_ADMIN_URL"
	envAdminToken     = "LSPROXY_ADMIN_TOKEN"
	envAdminTokenFile = "LSPROXY_ADMIN_TOKEN_FILE"
	defaultAdminURL   = "http://127.0.0.1:8081"
)

// clientEnv are the LSPROXY_* variables only the CLI reads, for the
// unknown-variable check (config.UnknownEnv).
var clientEnv = []string{envAdminURL}

// tenantsCommands are the registered subcommand constructors, in
// registration order (help lists them sorted).
var tenantsCommands []func(*tenantsCLI) *cobra.Command

// registerTenantsCommand adds a `tenants` subcommand. Call it from init.
func registerTenantsCommand(f func(*tenantsCLI) *cobra.Command) {
	tenantsCommands = append(tenantsCommands, f)
}

// tenantsCLI is the state every tenants subcommand shares.
type tenantsCLI struct {
	*cli
	adminURL  string
	tokenFile string
	output    string // "table" or "json"
	timeout   time.Duration
	client    *adminClient // set by PersistentPreRunE
}

func (c *cli) tenantsCommand() *cobra.Command {
	tc := &tenantsCLI{cli: c}
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Manage tenants through a running lsproxy's admin API",
		Long: `Manage tenants through the admin API of a running lsproxy.

The admin API is found at --admin-url (default $LSPROXY_ADMIN_URL, else
` + defaultAdminURL + `); the admin token is read from $LSPROXY_ADMIN_TOKEN, or from the
file named by --admin-token-file or $LSPROXY_ADMIN_TOKEN_FILE (never from a
flag: command lines are visible to other users).`,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return tc.setup()
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&tc.adminURL, "admin-url", "", "admin API base URL (default $LSPROXY_ADMIN_URL or "+defaultAdminURL+")")
	pf.StringVar(&tc.tokenFile, "admin-token-file", "", "file holding the admin token (default $LSPROXY_ADMIN_TOKEN, $LSPROXY_ADMIN_TOKEN_FILE)")
	pf.StringVarP(&tc.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&tc.timeout, "timeout", 30*time.Second, "timeout of each admin API request")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	for _, f := range tenantsCommands {
		cmd.AddCommand(f(tc))
	}
	return cmd
}

// setup validates the shared flags and builds the admin client.
func (tc *tenantsCLI) setup() error {
	if tc.output != "table" && tc.output != "json" {
		return fail(exitUsage, fmt.Errorf("--output %q: want table or json", tc.output))
	}
	raw := tc.adminURL
	if raw == "" {
		raw = os.Getenv(envAdminURL)
	}
	if raw == "" {
		raw = defaultAdminURL
	}
	base, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fail(exitUsage, fmt.Errorf("admin URL %q: want http(s)://host:port", raw))
	}
	token, err := adminToken(tc.tokenFile)
	if err != nil {
		return fail(exitUsage, err)
	}
	tc.client = &adminClient{base: base, token: token, http: &http.Client{Timeout: tc.timeout}}
	return nil
}

// errNoAdminToken: the CLI checks its own precondition before it sends
// anything (a request without a token could only be answered 401).
var errNoAdminToken = errors.New("no admin token: set LSPROXY_ADMIN_TOKEN (the server's admin token), or LSPROXY_ADMIN_TOKEN_FILE / --admin-token-file naming a file that holds it")

// adminToken reads the token from file, else $LSPROXY_ADMIN_TOKEN, else
// the file in $LSPROXY_ADMIN_TOKEN_FILE; "" when none is set.
func adminToken(file string) (string, error) {
	if file == "" {
		if t := os.Getenv(envAdminToken); t != "" {
			return t, nil
		}
		file = os.Getenv(envAdminTokenFile)
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// adminClient calls the admin API. It is safe for concurrent use.
type adminClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// apiError is an admin API error answer: the status and lsproxy's error
// body ({"error": CODE, "message": TEXT, ...}).
type apiError struct {
	Status    int    `json:"-"`
	Code      string `json:"error"`
	Message   string `json:"message"`
	Reason    string `json:"reason,omitempty"`
	Tenant    string `json:"tenant,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("admin API answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	message := e.Message
	if hint := e.commandHint(); hint != "" {
		message = hint // the server's text names an HTTP call; a CLI user wants the command
	}
	if message != "" {
		msg += ": " + message
	}
	if e.Reason != "" {
		msg += " (reason: " + e.Reason + ")"
	}
	return msg
}

// commandHint is what to run next for an answer whose server message
// names an admin API call, or "".
func (e *apiError) commandHint() string {
	tenant := e.Tenant
	if tenant == "" {
		tenant = "TENANT"
	}
	switch e.Code {
	case "reauthorization_required":
		return "the merchant must re-authorize; get a link to send them with: lsproxy tenants authorize " + tenant
	case "conflict":
		return "the tenant changed concurrently; run the command again"
	case "onboarding_disabled":
		return "onboarding is not configured on the server: set LSPROXY_REDIRECT_URL there"
	}
	return ""
}

// exitCode maps the answer to the CLI's exit codes.
func (e *apiError) exitCode() int {
	switch {
	case e.Status == http.StatusNotFound && e.Code == "admin_disabled":
		return exitAuth
	case e.Status == http.StatusNotFound && e.Code == "unknown_tenant":
		return exitNotFound
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return exitAuth
	case e.Status == http.StatusConflict:
		return exitConflict
	case e.Status == http.StatusBadRequest:
		return exitUsage
	case e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests:
		return exitUnavailable
	case e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed:
		return exitFailure // this lsproxy has no such endpoint
	}
	return exitFailure
}

// do sends method path (with query) and a JSON body (nil for none), and
// returns the response body of a 2xx answer. Errors are exitErrors ready
// to return from RunE: an *apiError for a non-2xx answer, exitUnavailable
// when lsproxy cannot be reached.
func (a *adminClient) do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	if a.token == "" {
		return nil, fail(exitAuth, errNoAdminToken) // checked here, after the command line was
	}
	u := *a.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fail(exitFailure, err)
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fail(exitUsage, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		// The URL error names the admin URL, never the token.
		return nil, fail(exitUnavailable, fmt.Errorf("cannot reach the admin API: %w", err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fail(exitUnavailable, fmt.Errorf("reading the admin API's answer: %w", err))
	}
	if resp.StatusCode/100 == 2 {
		return data, nil
	}
	ae := &apiError{Status: resp.StatusCode}
	parsed := json.Unmarshal(data, ae) == nil
	if parsed && proxyListenerCode(ae.Code) {
		return nil, fail(exitFailure, wrongListener(a.base.String(), ae.Code))
	}
	if !parsed || ae.Code == "" {
		ae.Code, ae.Message = "", strings.TrimSpace(firstLine(string(data)))
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			ae.Message = "this lsproxy has no " + method + " " + path + " (an older version?)"
		}
	}
	return nil, fail(ae.exitCode(), ae)
}

// proxyListenerCode reports whether code is one only the proxy listener
// answers: the admin URL then points at the proxy port.
func proxyListenerCode(code string) bool {
	return code == "missing_tenant" || code == "proxy_auth_required"
}

// wrongListener explains an admin URL that reached the proxy listener.
func wrongListener(base, code string) error {
	return fmt.Errorf("%s answered %s, as lsproxy's proxy listener does: the admin API is on the control listener "+
		"(LSPROXY_CONTROL_LISTEN, default 127.0.0.1:8081); set LSPROXY_ADMIN_URL or --admin-url to it", base, code)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// tenantPath is /admin/tenants/{id}[/suffix] with id escaped.
func tenantPath(id, suffix string) string {
	p := "/admin/tenants/" + url.PathEscape(id)
	if suffix != "" {
		p += "/" + suffix
	}
	return p
}

// tenantArg validates the one TENANT argument.
func tenantArg(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%s takes one TENANT argument, got %d", cmd.CommandPath(), len(args))
	}
	return nil
}

// completeTenantIDs completes a TENANT argument from the admin API (best
// effort: no completion when lsproxy is unreachable).
func (tc *tenantsCLI) completeTenantIDs(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || tc.setup() != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
	defer cancel()
	var ids []string
	_ = tc.eachTenant(ctx, "", 0, func(v tenantRow) error {
		if strings.HasPrefix(v.ID, prefix) {
			ids = append(ids, v.ID+"\t"+string(v.Status))
		}
		return nil
	})
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// printJSON writes raw JSON indented, numbers and "&", "<", ">" as they
// are (no \u0026 escapes in links).
func printJSON(w io.Writer, raw []byte) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fail(exitFailure, fmt.Errorf("the admin API answered invalid JSON: %w", err))
	}
	return writeJSONOut(w, v)
}
