package control

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/store"
)

// Tokens is what the admin API needs from the token manager.
// *auth.Manager implements it; implementations must be safe for concurrent use.
type Tokens interface {
	ForceRefresh(ctx context.Context, tenant string) (auth.Token, error)
	// Retry sends a flagged tenant's stored refresh token once more.
	Retry(ctx context.Context, tenant string) (auth.Token, error)
	Invalidate(tenant string)
}

var _ Tokens = (*auth.Manager)(nil)

// Server is the control listener's handler. Set the fields, then call
// Handler once.
type Server struct {
	Store  store.Store
	Tokens Tokens
	// AdminToken guards /admin; "" disables the admin API (404).
	AdminToken string
	// Gatherer serves /metrics; nil means prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Onboarding serves the authorize and callback endpoints; nil means
	// onboarding is not configured (the endpoints answer 503).
	Onboarding Onboarding
	// Locations re-reads a tenant's merchant account and K-Series
	// locations on demand (POST /admin/tenants/{id}/locations); nil = 503.
	Locations interface {
		RefreshLocations(ctx context.Context, tenant string) (*store.Tenant, error)
	}
	// Provider is recorded on imported tenants.
	Provider string
	// Logger receives the audit log of admin actions; nil means none.
	Logger *zap.Logger
	// RateLimits reports tenants' upstream budgets for GET
	// /admin/tenants/{id}; nil means none shown.
	RateLimits RateLimits
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SessionKey signs operator console sessions (console_session.go); every
	// replica needs the same key to accept the others' sessions. nil means a
	// random key per process (a session then works on one replica only).
	SessionKey []byte
	// ConsoleIdle ends a console session after this long without an
	// operator action; 0 means DefaultConsoleIdle.
	ConsoleIdle time.Duration
	// ConsoleOIDC, when set, adds sign-in with an OpenID Connect provider
	// to the console (console_oidc.go); nil = the admin token only.
	ConsoleOIDC *ConsoleOIDC

	adminMux *http.ServeMux // the admin routes, without bearer check and audit (the console calls them)
	attempts *attempts      // wrong admin tokens per client (throttle.go), shared with the console
}

// Onboarding starts and finishes the OAuth authorization-code flow.
type Onboarding interface {
	// AuthorizeLink returns a link to send the merchant of tenant.
	AuthorizeLink(ctx context.Context, tenant string) (string, error)
	// ServeStart handles the merchant opening the link.
	ServeStart(w http.ResponseWriter, r *http.Request)
	// ServeCallback handles the provider's redirect.
	ServeCallback(w http.ResponseWriter, r *http.Request)
}

var _ Onboarding = (*onboard.Onboarder)(nil)

// Rebinder is implemented by an Onboarding that can issue a link allowing
// the merchant to connect another account than the tenant's
// (POST /admin/tenants/{id}/authorize {"rebind": true}).
type Rebinder interface {
	RebindLink(ctx context.Context, tenant string) (string, error)
}

var _ Rebinder = (*onboard.Onboarder)(nil)

// Handler returns the control listener's mux.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	s.attempts = newAttempts(s.Now)
	g := s.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))

	admin := http.NewServeMux()
	admin.HandleFunc("GET /admin/tenants", s.list)
	admin.HandleFunc("GET /admin/tenants/{id}", s.get)
	admin.HandleFunc("PUT /admin/tenants/{id}", s.put)
	admin.HandleFunc("DELETE /admin/tenants/{id}", s.delete)
	admin.HandleFunc("POST /admin/tenants/{id}/refresh", s.refresh)
	admin.HandleFunc("POST /admin/tenants/{id}/retry", s.retry)
	admin.HandleFunc("DELETE /admin/tenants/{id}/rate-limit", s.resetRateLimit)
	admin.HandleFunc("POST /admin/tenants/{id}/authorize", s.authorize)
	admin.HandleFunc("POST /admin/import", s.bulkImport)
	admin.HandleFunc("POST /admin/tenants/{id}/locations", s.refreshLocations)
	s.mountWebhooks(admin)
	s.mountActions(admin)
	admin.HandleFunc("POST /admin/tenants/{id}/accept-candidate", s.acceptCandidate)
	admin.HandleFunc("POST /admin/tenants/{id}/revoke-links", s.revokeLinks)
	mux.Handle("/admin/", s.audited(s.requireAdmin(admin)))
	s.adminMux = admin
	s.mountConsole(mux)

	mux.HandleFunc("GET /oauth/start", s.onboarding(func(o Onboarding) http.HandlerFunc { return o.ServeStart }))
	mux.HandleFunc("GET /oauth/callback", s.onboarding(func(o Onboarding) http.HandlerFunc { return o.ServeCallback }))
	return withRequestID(mux)
}

// withRequestID sets X-Request-Id on every response (the caller's when
// valid, else a new one, as on the proxy listener); error bodies quote it.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httperr.RequestIDHeader, httperr.RequestID(r))
		next.ServeHTTP(w, r)
	})
}

func (s *Server) onboarding(pick func(Onboarding) http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Onboarding == nil {
			httperr.Write(w, httperr.Error{Kind: httperr.OnboardingDisabled})
			return
		}
		pick(s.Onboarding)(w, r)
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain")
	if err := s.Store.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("store unavailable\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// requireAdmin checks the bearer admin token in constant time (hashing
// first so that the comparison does not leak the token's length).
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(s.AdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.AdminToken == "" {
			httperr.Write(w, httperr.Error{Kind: httperr.AdminDisabled})
			return
		}
		client := clientAddr(r)
		if blocked, wait := s.attempts.blocked(client); blocked {
			httperr.Write(w, httperr.Error{Kind: httperr.TooManyAttempts, RetryAfter: wait})
			return
		}
		const prefix = "Bearer "
		h := r.Header.Get("Authorization")
		got := sha256.Sum256([]byte(h[min(len(prefix), len(h)):]))
		if len(h) < len(prefix) || h[:len(prefix)] != prefix || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.attempts.failed(client)
			w.Header().Set("WWW-Authenticate", `Bearer realm="lsproxy-admin"`)
			httperr.Write(w, httperr.Error{Kind: httperr.AdminUnauthorized})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminError is the one place that maps admin-path errors to answers.
func adminError(w http.ResponseWriter, tenant string, err error) {
	e := httperr.Error{Kind: httperr.StoreUnavailable, Tenant: tenant}
	var reauth *auth.ReauthError
	var unavail *auth.UnavailableError
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, auth.ErrUnknownTenant):
		e.Kind = httperr.UnknownTenant
	case errors.As(err, &reauth):
		e.Kind, e.Reason = httperr.AdminReauthorization, reauth.Reason
	case errors.As(err, &unavail):
		e.Kind, e.RetryAfter = httperr.AdminTokenUnavailable, unavail.RetryAfter
	case errors.Is(err, store.ErrConflict):
		e.Kind = httperr.Conflict
	case errors.Is(err, auth.ErrNoTokenHost):
		e.Kind = httperr.NoUpstreamHost
	case errors.Is(err, store.ErrNoCandidate):
		e.Kind = httperr.NoCandidate
	case errors.Is(err, onboard.ErrMisconfigured):
		e.Kind = httperr.OnboardingMisconfigured
	case errors.Is(err, store.ErrDecrypt):
		e.Kind = httperr.DecryptFailed
	}
	httperr.Write(w, e)
}
