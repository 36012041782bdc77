// Command lsemulator serves the strict Lightspeed OAuth2 + API emulator
// (package internal/emulator) on a loopback port, for trying lsproxy by hand and
// for scripts.
//
// It prints its base URL as the first line on stdout (and, with
// -control-listen, "control <URL>" as the second), then serves until SIGINT
// or SIGTERM. Log lines go to stderr and never contain tokens or secrets.
//
//	lsemulator -mode l-series -tenant demo -redirect-url http://127.0.0.1:8080/oauth/callback
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, serves until ctx ends and returns the exit code: 0 after a
// clean shutdown, 1 when serving fails, 2 on bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lsemulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen      = fs.String("listen", "127.0.0.1:0", "address to serve on (port 0: any free port)")
		controlAddr = fs.String("control-listen", "", "address for the unauthenticated control API (empty: none)")
		mode        = fs.String("mode", string(emulator.ModeKSeries), "k-series, k-series-v1, l-series, o-series, r-series or x-series")
		clientID    = fs.String("client-id", emulator.DefaultClientID, "the registered client's id")
		secret      = fs.String("client-secret", emulator.DefaultClientSecret, "the registered client's secret")
		redirect    = fs.String("redirect-url", "", "registered redirect URL, matched exactly (empty: any absolute http(s) URL)")
		clientAuth  = fs.String("client-auth", "", "basic or body (empty: the mode's default)")
		pkce        = fs.Bool("pkce", false, "require PKCE S256 (always on for l-series)")
		accessTTL   = fs.Duration("access-ttl", emulator.DefaultAccessTTL, "access token lifetime")
		idleTTL     = fs.Duration("refresh-idle-ttl", 0, "refresh tokens expire when unused this long (0: never)")
		codeTTL     = fs.Duration("code-ttl", emulator.DefaultCodeTTL, "authorization code lifetime")
		revokeOld   = fs.Bool("revoke-old-access", false, "a refresh revokes the previous access token at once")
		tenant      = fs.String("tenant", "", "approve authorize requests as this tenant (login_hint overrides)")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lsemulator: unexpected arguments %q\n", fs.Args())
		return 2
	}
	m := emulator.Mode(*mode)
	if _, ok := emulator.PathsFor(m); !ok {
		fmt.Fprintf(stderr, "lsemulator: unknown -mode %q\n", *mode)
		return 2
	}
	if *clientAuth != "" && *clientAuth != emulator.AuthBasic && *clientAuth != emulator.AuthBody {
		fmt.Fprintf(stderr, "lsemulator: -client-auth must be basic or body\n")
		return 2
	}
	logger := log.New(stderr, "", log.LstdFlags)
	em := emulator.New(emulator.Config{
		Mode:                     m,
		ClientID:                 *clientID,
		ClientSecret:             *secret,
		RedirectURL:              *redirect,
		ClientAuth:               *clientAuth,
		PKCE:                     *pkce,
		AccessTTL:                *accessTTL,
		RefreshIdleTTL:           *idleTTL,
		CodeTTL:                  *codeTTL,
		RevokeOldAccessOnRefresh: *revokeOld,
		Logf:                     logger.Printf,
	})
	if *tenant != "" {
		em.Approve(*tenant)
	}

	servers := []*http.Server{newServer(em, logger)}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "lsemulator: %v\n", err)
		return 1
	}
	listeners := []net.Listener{ln}
	fmt.Fprintf(stdout, "http://%s\n", ln.Addr())
	if *controlAddr != "" {
		cl, err := net.Listen("tcp", *controlAddr)
		if err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "lsemulator: control: %v\n", err)
			return 1
		}
		listeners = append(listeners, cl)
		servers = append(servers, newServer(em.ControlHandler(), logger))
		fmt.Fprintf(stdout, "control http://%s\n", cl.Addr())
	}
	cfg := em.Config()
	p := em.Paths()
	logger.Printf("lsemulator: mode=%s client_auth=%s pkce=%t authorize=%s token=%s api_prefix=%s",
		cfg.Mode, cfg.ClientAuth, cfg.PKCE, p.Authorize, p.Token, p.APIPrefix)

	errc := make(chan error, len(servers))
	for i, s := range servers {
		go func() { errc <- s.Serve(listeners[i]) }()
	}
	code := 0
	select {
	case <-ctx.Done():
	case err := <-errc:
		logger.Printf("lsemulator: serve: %v", err)
		code = 1
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			logger.Printf("lsemulator: shutdown: %v", err)
		}
		_ = s.Close()
	}
	return code
}

func newServer(h http.Handler, logger *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          logger,
	}
}
