package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/internal/logging"
	"github.com/lsproxy/lsproxy/store"
)

// TokenSource hands out tenants' access tokens. *auth.Manager implements it.
// Implementations must be safe for concurrent use.
type TokenSource interface {
	// Token returns a valid access token for tenant.
	Token(ctx context.Context, tenant string) (auth.Token, error)
	// Recover is called after the upstream answered 401 to a request made
	// with used; it returns the token to replay with.
	Recover(ctx context.Context, tenant, used string) (auth.Token, error)
}

var _ TokenSource = (*auth.Manager)(nil)

// Handler is the proxied-traffic handler. Configure the fields, then call
// Init once before serving; it must not be modified afterwards.
type Handler struct {
	// Upstream is the only host requests (and tokens) go to. Its path is a
	// prefix of every forwarded path.
	Upstream *url.URL
	// UpstreamTemplate, when set, is used instead of Upstream: a URL with
	// {domain_prefix} in the host or path, filled per request from the
	// tenant's own token (auth.Token.DomainPrefix), so each x-series store
	// is reached on its own host. A tenant without a valid value gets
	// ErrNoUpstreamHost, never another host.
	UpstreamTemplate string
	// Tokens supplies access tokens.
	Tokens TokenSource
	// TenantHeader names the tenant; "" means X-Tenant.
	TenantHeader string
	// LocationHeader names a K-Series business location id; a request
	// without the tenant header but with this one goes to the tenant that
	// Locations picks. "" means X-Location. It is never forwarded.
	LocationHeader string
	// Locations resolves a location id to a tenant among those allow
	// accepts (the caller's key; nil = any); it returns
	// ErrUnknownLocation for none and ErrAmbiguousLocation for several.
	// It is called only after the caller was authenticated (Caller), and
	// error bodies of a request routed by location never name a tenant.
	// nil = the location header is not used.
	Locations func(ctx context.Context, location string, allow func(tenant string) bool) (string, error)
	// MaxReplayBody is the largest request body kept for one replay after
	// an upstream 401; larger bodies stream without replay. 0 means 1 MiB.
	MaxReplayBody int64
	// Transport sends upstream requests; nil means NewTransport(30s).
	Transport http.RoundTripper
	// Authenticate checks the caller before anything else; nil means no
	// caller authentication. It returns the caller's key id (for the
	// request log; "" when unknown), and ErrProxyAuthRequired or
	// ErrTenantNotAllowed to refuse.
	Authenticate func(r *http.Request, tenant string) (caller string, err error)
	// Caller authenticates a request routed by location, before any
	// location lookup: the caller's key id and which tenants it may use,
	// or ErrProxyAuthRequired. Required with Authenticate and Locations.
	Caller func(r *http.Request) (caller string, allow func(tenant string) bool, err error)
	// Logger gets one line per request; nil means no request log.
	Logger *zap.Logger
	// Metrics; nil means none recorded.
	Metrics *Metrics
	// Pacer holds requests to each tenant's upstream budget (pacing.go);
	// nil means every request is sent at once.
	Pacer Pacer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tracing adds lsproxy's view of each request to the caller's server
	// span (tracing.Handler); false means no span is looked up.
	Tracing bool

	up     *Upstream
	rp     *httputil.ReverseProxy
	access *logging.AccessLog // Logger's request lines without zap's field work; nil: through zap
}

// reqState travels in the request context from ServeHTTP to the transport.
// It is that context itself: the request's own, plus Value(ctxKey{})
// returning the state, so that no separate context is allocated per request.
type reqState struct {
	context.Context
	sw           httperr.StatusWriter // allocated with the state: one allocation less per request
	idHeader     [1]string            // X-Request-Id's header value, shared by response and upstream request
	tenant       string
	requestID    string // X-Request-Id: returned to the caller, sent upstream
	caller       string // the caller's key id, "" without caller authentication
	byLocation   bool   // routed by the location header: error bodies name no tenant
	upstreamTime time.Duration
	errCode      string
	replayed     bool
	in           *url.URL // the inbound URL, for a templated upstream
}

type ctxKey struct{}

func (st *reqState) Value(key any) any {
	if key == (ctxKey{}) {
		return st
	}
	return st.Context.Value(key)
}

// Init prepares the handler. It returns an error if Upstream or Tokens is missing.
func (h *Handler) Init() error {
	if h.Authenticate != nil && h.Locations != nil && h.Caller == nil {
		// Without it a location would be looked up before the caller is known.
		return errors.New("proxy: Caller is required with Authenticate and Locations")
	}
	if h.UpstreamTemplate != "" {
		up, err := ParseUpstream(h.UpstreamTemplate)
		if err != nil {
			return err
		}
		h.up = up
	} else {
		if h.Upstream == nil || h.Upstream.Scheme == "" || h.Upstream.Host == "" {
			return errors.New("proxy: Upstream must be an absolute URL")
		}
		h.up = &Upstream{raw: h.Upstream.String(), fixed: h.Upstream}
	}
	if h.Tokens == nil {
		return errors.New("proxy: Tokens is required")
	}
	if h.TenantHeader == "" {
		h.TenantHeader = "X-Tenant"
	}
	h.TenantHeader = http.CanonicalHeaderKey(h.TenantHeader)
	if h.LocationHeader == "" {
		h.LocationHeader = "X-Location"
	}
	h.LocationHeader = http.CanonicalHeaderKey(h.LocationHeader)
	if h.MaxReplayBody <= 0 {
		h.MaxReplayBody = 1 << 20
	}
	if h.Transport == nil {
		h.Transport = NewTransport(TransportOptions{})
	}
	if h.Logger == nil {
		h.Logger = zap.NewNop()
	}
	h.access = logging.NewAccessLog(h.Logger, accessMessage)
	if h.Now == nil {
		h.Now = time.Now
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:      h.rewrite,
		Transport:    &tokenTransport{h: h, base: h.Transport},
		BufferPool:   bufferPool{},
		ErrorHandler: h.proxyError,
		// The caller already has X-Request-Id (set in ServeHTTP); the
		// upstream's copy, the same id or its own, would duplicate it.
		ModifyResponse: func(resp *http.Response) error { delete(resp.Header, httperr.RequestIDHeader); return nil },
		// FlushInterval stays 0: ReverseProxy itself flushes streaming
		// responses (text/event-stream, unknown length) after every write.
		// -1 for every response cost a timer, a goroutine and a separate
		// header write per request (docs/benchmarks.md).
		ErrorLog: zap.NewStdLog(h.Logger.Named("reverseproxy")),
	}
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.Now()
	st := &reqState{Context: r.Context(), sw: httperr.StatusWriter{ResponseWriter: w}, requestID: httperr.RequestID(r)}
	sw := &st.sw
	st.idHeader[0] = st.requestID
	w.Header()[httperr.RequestIDHeader] = st.idHeader[:]
	tenant, location, err := h.tenantOf(r)
	if r.Method == http.MethodTrace || r.Method == http.MethodConnect {
		// TRACE would have an upstream echo the request, injected token
		// included, back to the caller; CONNECT is not for a reverse proxy.
		err = ErrMethodNotAllowed
	}
	if err == nil && location != "" {
		// The caller first, then the lookup among what it may use: a
		// location id is no oracle of tenants.
		st.byLocation = true
		var allow func(string) bool
		if h.Caller != nil {
			st.caller, allow, err = h.Caller(r)
		}
		if err == nil {
			tenant, err = h.Locations(r.Context(), location, allow)
		}
	} else if err == nil && h.Authenticate != nil {
		st.caller, err = h.Authenticate(r, tenant)
	}
	if err == nil {
		err = h.pace(r, tenant)
	}
	if errors.Is(err, context.Canceled) {
		st.errCode = "client_canceled"
		sw.WriteHeader(499)
	} else if err != nil {
		st.errCode = writeError(sw, st.bodyTenant(tenant), err)
	} else {
		st.tenant = tenant
		h.rp.ServeHTTP(sw, r.WithContext(st))
	}
	end := h.Now()
	h.finish(r, sw, st, tenant, end, end.Sub(start))
	if h.Tracing {
		annotateSpan(r, st, tenant)
	}
}

// tenantOf returns the tenant header's tenant, or the location header's
// location (to resolve after the caller is authenticated).
func (h *Handler) tenantOf(r *http.Request) (tenant, location string, err error) {
	vals := r.Header[h.TenantHeader]
	if len(vals) == 0 && h.Locations != nil {
		if locs := r.Header[h.LocationHeader]; len(locs) > 0 {
			if len(locs) > 1 || locs[0] == "" {
				return "", "", ErrUnknownLocation
			}
			return "", locs[0], nil
		}
	}
	if len(vals) == 0 || vals[0] == "" {
		return "", "", ErrMissingTenant
	}
	if len(vals) > 1 || !store.ValidTenantID(vals[0]) {
		return "", "", ErrInvalidTenant
	}
	return vals[0], "", nil
}

// bodyTenant is the tenant an error body names: none for a request routed
// by location (the caller did not name one).
func (st *reqState) bodyTenant(tenant string) string {
	if st.byLocation {
		return ""
	}
	return tenant
}

// rewrite fixes the destination to Upstream and cleans the headers.
// ReverseProxy has already removed hop-by-hop headers (including any named
// by the client's Connection header) and X-Forwarded-*; the bearer token is
// set later, in the transport, so no client header can remove it.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	if h.up.Templated() {
		// The host depends on the tenant's token, known only in the
		// transport: park the request on a host that never resolves.
		if st, _ := pr.In.Context().Value(ctxKey{}).(*reqState); st != nil {
			st.in = pr.In.URL
		}
		pr.SetURL(h.up.parked)
	} else {
		pr.SetURL(h.up.fixed)
	}
	pr.Out.Host = ""
	// Keys are canonical (Init made the configured ones so): delete, not
	// Del, which canonicalizes each key again on every request.
	hd := pr.Out.Header
	delete(hd, h.TenantHeader)
	delete(hd, h.LocationHeader)
	delete(hd, "Authorization")
	delete(hd, "Proxy-Authorization")
	delete(hd, "Cookie") // never forward the caller's cookies to the merchant's API
	if st, _ := pr.In.Context().Value(ctxKey{}).(*reqState); st != nil {
		// The caller's (when valid) or ours. Shared with the response
		// header: nothing writes into a header value (Add appends, and a
		// full one-element slice is copied first).
		hd[httperr.RequestIDHeader] = st.idHeader[:]
	}
}

// proxyError is ReverseProxy's ErrorHandler: every failure after tenant
// resolution (token or upstream) is answered here.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(ctxKey{}).(*reqState)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads an answer.
		if st != nil {
			st.errCode = "client_canceled"
		}
		w.WriteHeader(499)
		return
	}
	tenant := ""
	if st != nil {
		tenant = st.bodyTenant(st.tenant)
	}
	code := writeError(w, tenant, err)
	if st != nil {
		st.errCode = code
	}
}

func (h *Handler) finish(r *http.Request, sw *httperr.StatusWriter, st *reqState, tenant string, end time.Time, d time.Duration) {
	status := sw.StatusOr200()
	h.Metrics.observe(status, r.Method, st, d)
	if h.access != nil {
		h.access.Write(&logging.Access{
			Time:            end,
			Tenant:          tenant,
			Method:          r.Method,
			Path:            r.URL.Path, // never the query: it may carry secrets
			Status:          status,
			Latency:         d,
			UpstreamLatency: st.upstreamTime,
			Error:           st.errCode,
			Replayed:        st.replayed,
			RequestID:       st.requestID,
			Caller:          st.caller,
		})
	} else if ce := h.Logger.Check(zap.InfoLevel, accessMessage); ce != nil {
		// The same line through zap (a test's observer, console format).
		writeAccess(ce,
			zap.String("tenant", tenant),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.Int("status", status),
			zap.Duration("latency", d),
			zap.Duration("upstream_latency", st.upstreamTime),
			zap.String("error", st.errCode),
			zap.Bool("replayed", st.replayed),
			zap.String("request_id", st.requestID),
			zap.String("caller", st.caller),
		)
	}
}

// accessMessage is the message of every request line.
const accessMessage = "request"

// bufferPool recycles ReverseProxy's 32 KiB copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

var _ httputil.BufferPool = bufferPool{}
