package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// demoTenant is onboarded by `lsproxy dev`.
const demoTenant = "demo"

// dev runs a sandbox: the embedded store in a temp dir, the built-in
// Lightspeed emulator as provider and upstream, and one demo tenant
// onboarded through the real authorize → callback path.
// listen and controlListen, when not "", override the configured listeners.
//
// What the user set is honoured: LSPROXY_ADMIN_TOKEN (else a random one),
// LSPROXY_DATA_DIR (kept after exit, so `lsproxy tenants export` can read
// it once dev stopped; else a temporary directory, removed),
// LSPROXY_ENCRYPTION_KEY (else a random one), and the OTEL_* variables
// (tracing, as for serve). It prints the export lines for the tenants
// commands.
func dev(ctx context.Context, listen, controlListen string, stdout, stderr io.Writer) error {
	cfg, err := config.Load("", os.Environ())
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Listen = listen
	}
	if controlListen != "" {
		cfg.ControlListen = controlListen
	}
	dir, keepDir := os.Getenv("LSPROXY_DATA_DIR"), true
	if dir == "" {
		keepDir = false
		if dir, err = os.MkdirTemp("", "lsproxy-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}

	// Bind the control listener first: the emulator must know the exact
	// redirect URL, which contains its port.
	cl, err := net.Listen("tcp", cfg.ControlListen)
	if err != nil {
		return fmt.Errorf("control listener %s: %w (set --control-listen)", cfg.ControlListen, err)
	}
	controlAddr := cl.Addr().String()
	cl.Close()
	cfg.ControlListen = controlAddr
	cfg.RedirectURL = "http://" + controlAddr + "/oauth/callback"

	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, RedirectURL: cfg.RedirectURL, SignInPage: true})
	demoBusiness(emu)
	emu.Approve(demoTenant) // the demo tenant's onboarding below; withdrawn after
	// An R-Series-style bucket (60 units, 1/s, GET 1, writes 10), so the
	// sandbox shows the rate-limit headers and lsproxy's pacing.
	emu.SetRateLimit(emulator.RateLimit{BucketSize: 60, DripRate: 1})
	el, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	go emuSrv.Serve(el)
	defer emuSrv.Close()
	emuURL := "http://" + el.Addr().String()
	// The emulator's knobs (revoke a grant, identity outage, ...) on a
	// loopback listener of their own.
	kl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	knobSrv := &http.Server{Handler: emu.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go knobSrv.Serve(kl)
	defer knobSrv.Close()
	knobURL := "http://" + kl.Addr().String()
	paths := emu.Paths()
	ec := emu.Config()

	cfg.Provider = "k-series"
	cfg.UpstreamURL = emuURL
	cfg.AuthorizeURL = emuURL + paths.Authorize
	cfg.TokenURL = emuURL + paths.Token
	cfg.ClientID, cfg.ClientSecret = ec.ClientID, ec.ClientSecret
	cfg.RedisURL, cfg.RedisSentinelAddrs, cfg.RedisClusterAddrs = "", nil, nil
	cfg.DataDir = dir
	// A key the user set is never echoed; only one dev made is printed.
	keyShown := `"$LSPROXY_ENCRYPTION_KEY"`
	if cfg.EncryptionKey == "" {
		cfg.EncryptionKey = randomB64(32)
		keyShown = cfg.EncryptionKey
	}
	if cfg.AdminToken == "" {
		cfg.AdminToken = "dev-" + randomHex(16)
	}
	cfg.LogFormat = "console"
	if problems := cfg.Validate(config.ModeDev); len(problems) > 0 {
		return errors.Join(problems...)
	}

	log, closeLog, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	stopTracing, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	a, err := build(ctx, cfg, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	defer a.store.Close()

	proxyAddr, controlAddr, done, err := a.start(ctx)
	if err != nil {
		return err
	}
	if err := onboardDemo(ctx, controlAddr, cfg.AdminToken); err != nil {
		return fmt.Errorf("onboarding the demo tenant: %w", err)
	}
	exportHint := "Start dev with LSPROXY_DATA_DIR=DIR to keep the store and export it after stopping."
	if keepDir {
		exportHint = fmt.Sprintf("After stopping dev (the embedded store serves one process):\n  LSPROXY_DATA_DIR=%s LSPROXY_ENCRYPTION_KEY=%s lsproxy tenants export tenants.ndjson", dir, keyShown)
	}
	tracingLine := "Tracing: off (set OTEL_EXPORTER_OTLP_ENDPOINT to export spans)."
	if tracingOn() {
		tracingLine = "Tracing: on, OTLP/HTTP per the OTEL_* variables."
	}
	// From now on the emulator's sign-in page asks who signs in.
	emu.Approve("")
	fmt.Fprintf(stdout, `lsproxy dev is running (embedded store in %s, Lightspeed emulator at %s).
Tenant %q was onboarded through the real OAuth authorize → callback flow.

Try it:
  curl -H 'X-Tenant: %s' http://%s/f/data/businesses

The tenants commands, in this shell:
  export LSPROXY_ADMIN_URL=http://%s LSPROXY_ADMIN_TOKEN=%s
  lsproxy tenants list

Admin API:
  curl -H "Authorization: Bearer $LSPROXY_ADMIN_TOKEN" http://%s/admin/tenants/%s

Operator console (sign in with the admin token):
  http://%s/console/

By location (the demo business has locations 1001 Soho, 1002 Leeds, 1003 York):
  curl -H 'X-Location: 1001' 'http://%s/o/op/data/items?businessLocationId=1001'

Revoke the demo grant at the "provider" (then watch it get flagged), connect
again in a browser (the emulator's sign-in page lets you choose demo, soho or
other; login_hint=LOGIN does the same):
  curl -X POST '%s/revoke?tenant=demo'
  curl -X POST -H "Authorization: Bearer $LSPROXY_ADMIN_TOKEN" http://%s/admin/tenants/%s/authorize

Export: %s
%s

Press Ctrl-C to stop.
`, dir, emuURL, demoTenant, demoTenant, proxyAddr, controlAddr, cfg.AdminToken, controlAddr, demoTenant, controlAddr,
		proxyAddr, knobURL, controlAddr, demoTenant, exportHint, tracingLine)
	return <-done
}

// demoBusiness registers the sandbox's merchants: the demo tenant's login
// ("demo") in a business with three locations, a manager who sees one of
// them, and a user of another business (to try a refused re-authorization
// and a rebind).
func demoBusiness(emu *emulator.Emulator) {
	emu.AddAccount(emulator.Account{ID: "7340001", Name: "Demo Bistro Group", Locations: []emulator.Location{
		{ID: "1001", Name: "Soho"}, {ID: "1002", Name: "Leeds"}, {ID: "1003", Name: "York"}}})
	emu.AddAccount(emulator.Account{ID: "9160002", Name: "Other Venue", Locations: []emulator.Location{{ID: "5001", Name: "Bar"}}})
	emu.AddUser(demoTenant, "7340001")
	emu.AddUser("soho", "7340001", "1001")
	emu.AddUser("other", "9160002")
}

// onboardDemo asks the admin API for a link and follows it like the
// merchant's browser: lsproxy → emulator authorize → lsproxy callback.
func onboardDemo(ctx context.Context, controlAddr, adminToken string) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+controlAddr+"/admin/tenants/"+demoTenant+"/authorize", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	var body struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	err = decodeJSON(resp, &body)
	if err != nil {
		return err
	}
	req, _ = http.NewRequestWithContext(ctx, "GET", body.AuthorizeURL, nil)
	jar, _ := cookiejar.New(nil)                                            // a browser: the OAuth state is bound to its cookie
	resp, err = (&http.Client{Timeout: 10 * time.Second, Jar: jar}).Do(req) // follows the redirects
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("callback answered %d", resp.StatusCode)
	}
	return nil
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
