package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/gcheadroom"
	"github.com/lsproxy/lsproxy/internal/logging"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/proxy"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// app is a wired lsproxy: handlers and what they need to shut down.
type app struct {
	cfg     config.Config
	log     *zap.Logger
	store   store.Store
	manager *auth.Manager
	bg      *auth.BackgroundRefresher
	proxy   http.Handler
	control http.Handler
	// locations follows store changes to re-route location ids;
	// locRefresher re-reads K-Series locations after grant refreshes.
	locations    *proxy.LocationResolver
	locRefresher *auth.LocationRefresher
	// notifier delivers webhooks from the store's outbox; nil without a
	// webhook URL.
	notifier *onboard.Notifier
	// verifier finishes identifications the callback could not complete.
	verifier *onboard.Verifier
	// governor paces tenants to their upstream budget; nil when off. Its
	// unsent lease units are given back at shutdown.
	governor *ratelimit.Governor
}

// newLogger builds the process logger (access lines buffered, see
// internal/logging); call the returned func once at exit to flush.
func newLogger(cfg config.Config, w io.Writer) (*zap.Logger, func() error, error) {
	return logging.New(w, logging.Options{Level: cfg.LogLevel, Format: cfg.LogFormat})
}

// redisLogger routes go-redis's own messages (reconnects, failovers; they
// name addresses, never passwords) into the structured log.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

// testDial, when set (tests only), dials every upstream and token
// connection: the x-series tests point per-store hosts at loopback. nil in
// production.
var testDial func(ctx context.Context, network, addr string) (net.Conn, error)

// tokenTransport is auth.NewTokenTransport with the test dialer applied.
func tokenTransport(timeout time.Duration) *http.Transport {
	tr := auth.NewTokenTransport(timeout)
	if testDial != nil {
		tr.DialContext = testDial
	}
	return tr
}

// newTransport is proxy.NewTransport with the test dialer applied.
func newTransport(o proxy.TransportOptions) *http.Transport {
	tr := proxy.NewTransport(o)
	if testDial != nil {
		tr.DialContext = testDial
	}
	return tr
}

// openStore connects Redis when configured, else the embedded store.
// onError receives the Redis store's failures that fail no call (nil:
// ignored; see store.RedisOptions.OnError).
func openStore(ctx context.Context, cfg config.Config, keys *store.Keyring, onError func(op string, err error)) (store.Store, string, error) {
	if cfg.RedisURL != "" || len(cfg.RedisSentinelAddrs) > 0 || len(cfg.RedisClusterAddrs) > 0 {
		client, err := store.DialRedis(ctx, store.RedisConfig{
			URL:            cfg.RedisURL,
			SentinelMaster: cfg.RedisSentinelMaster,
			SentinelAddrs:  cfg.RedisSentinelAddrs,
			ClusterAddrs:   cfg.RedisClusterAddrs,
			Password:       cfg.RedisPassword,
			CAFile:         cfg.RedisCAFile,
			TLS:            cfg.RedisTLS && cfg.RedisURL == "",
			DialTimeout:    5 * time.Second,
		})
		if err != nil {
			return nil, "", err
		}
		return store.NewRedis(client, store.RedisOptions{Prefix: cfg.RedisKeyPrefix, Keys: keys, OnError: onError,
			WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout}), "redis", nil
	}
	s, err := store.OpenBolt(cfg.DataDir, keys)
	if err != nil {
		return nil, "", err
	}
	return s, "embedded", nil
}

// storeReason says why openStore chose the store it did, for the startup
// log (never a URL: it may carry a password).
func storeReason(cfg config.Config) string {
	switch {
	case len(cfg.RedisClusterAddrs) > 0:
		return "LSPROXY_REDIS_CLUSTER_ADDRS is set: Redis Cluster"
	case len(cfg.RedisSentinelAddrs) > 0:
		return "LSPROXY_REDIS_SENTINEL_ADDRS is set: Redis through Sentinel"
	case cfg.RedisURL != "":
		return "LSPROXY_REDIS_URL is set"
	}
	return "LSPROXY_REDIS_URL is not set: the embedded store in " + cfg.DataDir + " (one replica only)"
}

// metricsRegistry is where build registers every metric and what /metrics
// gathers from (a *prometheus.Registry).
type metricsRegistry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// build wires every part from cfg. The caller closes a.store.
func build(ctx context.Context, cfg config.Config, log *zap.Logger, reg metricsRegistry) (*app, error) {
	keys, err := store.ParseKeys(append([]string{cfg.EncryptionKey}, cfg.EncryptionKeys...)...)
	if err != nil {
		return nil, err
	}
	preset, ep, err := auth.LookupPreset(cfg.Provider, cfg.Environment)
	if err != nil {
		return nil, err
	}
	ep = overrideEndpoints(ep, cfg)
	clientAuth := preset.ClientAuth
	if cfg.ClientAuth != "" {
		clientAuth = cfg.ClientAuth
	}
	style, err := auth.AuthStyleFor(clientAuth)
	if err != nil {
		return nil, err
	}
	// A {domain_prefix} template (the x-series default) is filled per tenant.
	upstream, err := proxy.ParseUpstream(ep.API)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q is not usable (%v): set LSPROXY_UPSTREAM_URL", ep.API, err)
	}
	scopes := preset.Scopes
	if cfg.Scopes != "" {
		scopes = strings.Fields(cfg.Scopes)
	}
	pkce := preset.PKCE
	if cfg.PKCE != nil {
		pkce = *cfg.PKCE
	}

	redis.SetLogger(redisLogger{log.Named("redis")})
	s, kind, err := openStore(ctx, cfg, keys, func(op string, err error) {
		log.Warn("redis store", zap.String("op", op), zap.Error(err))
	})
	if err != nil {
		return nil, err
	}
	log.Info("store opened", zap.String("kind", kind), zap.String("why", storeReason(cfg)))
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	if r, ok := s.(*store.Redis); ok {
		logReplication(ctx, r, log)
	}

	oauthClient := &auth.OAuthClient{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		TokenURL:     ep.Token,
		AuthStyle:    style,
		Scopes:       scopes,
		Timeout:      cfg.TokenTimeout,
		HTTPClient:   &http.Client{Transport: traced(tokenTransport(cfg.TokenTimeout), "token endpoint")},
	}

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfoGauge())
	var notifier *onboard.Notifier
	if cfg.WebhookURL != "" {
		notifier, err = newNotifier(cfg, s, log.Named("webhook"))
		if err != nil {
			s.Close()
			return nil, err
		}
		notifier.Start(ctx)
	}
	onboard.RegisterWebhookMetrics(reg, notifier)
	reg.MustRegister(&control.TenantsGauge{Store: s})
	m := auth.NewManager(s, oauthClient, auth.ManagerOptions{
		RefreshBefore:   cfg.RefreshBefore,
		LockTTL:         cfg.EffectiveLockTTL(),
		CacheTTL:        cfg.CacheTTL,
		CacheMaxBytes:   cfg.EffectiveCacheMaxBytes(),
		BreakerFailures: uint32(cfg.BreakerFailures),
		BreakerOpenFor:  cfg.BreakerOpenFor,
		TokenTimeout:    cfg.TokenTimeout,
		GuardThreshold:  cfg.InvalidGrantGuardThreshold,
		GuardWindow:     cfg.InvalidGrantGuardWindow,
		Logger:          log.Named("token"),
		Metrics:         auth.NewMetrics(reg),
		OnFlag: func(tenant, reason string) {
			if notifier != nil {
				notifier.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: tenant, Reason: reason, At: time.Now()})
			}
		},
		OnRecover: func(tenant string) {
			if notifier != nil {
				notifier.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: tenant, At: time.Now()})
			}
		},
		OnGuard: func(tripped bool, tenants int) {
			if notifier != nil {
				notifier.Notify(onboard.GuardEvent(tripped, tenants, cfg.InvalidGrantGuardWindow, time.Now()))
			}
		},
	})

	governor, err := newGovernor(cfg, preset, s, log.Named("ratelimit"), reg)
	if err != nil {
		s.Close()
		return nil, err
	}
	if governor != nil {
		oauthClient.HTTPClient.Transport = &ratelimit.TokenTransport{Governor: governor, Base: oauthClient.HTTPClient.Transport}
	}

	preferred, _ := cfg.LocationPreferences() // validated
	locations := &proxy.LocationResolver{Store: s, TTL: cfg.CacheTTL, Preferred: preferred}
	ph := &proxy.Handler{
		UpstreamTemplate: upstream.String(),
		Tokens:           m,
		TenantHeader:     cfg.TenantHeader,
		LocationHeader:   cfg.LocationHeader,
		Locations:        locations.Resolve,
		MaxReplayBody:    cfg.MaxReplayBodyBytes,
		Transport:        traced(newTransport(proxy.TransportOptions{ResponseHeaderTimeout: cfg.UpstreamTimeout}), "upstream"),
		Logger:           log.Named(logging.AccessLogName),
		Metrics:          proxy.NewMetrics(reg),
		Tracing:          tracingOn(),
	}
	if len(cfg.ClientKeys) > 0 {
		keys, err := proxy.ParseClientKeys(cfg.ClientKeys)
		if err != nil {
			s.Close()
			return nil, err
		}
		callers := proxy.NewCallerAuth(keys)
		ph.Authenticate = callers.Authenticate
		ph.Caller = callers.Caller
		if governor != nil {
			governor.CallerKey = callers.KeyID
		}
		log.Info("caller authentication on", zap.Int("client_keys", len(keys)))
	} else if cfg.AllowUnauthenticated {
		log.Warn("caller authentication off: anyone who reaches the proxy listener can use any tenant", zap.String("listen", cfg.Listen))
	}
	if governor != nil {
		ph.Pacer = governor
	}
	if err := ph.Init(); err != nil {
		s.Close()
		return nil, err
	}

	// After every code exchange (and grant refresh): who is the merchant
	// (SPEC §8)? Asked on the tenant's own upstream host only.
	identifier := &auth.Identifier{
		Identity:   preset.Identity,
		API:        upstream.Resolve,
		HTTPClient: &http.Client{Transport: newTransport(proxy.TransportOptions{ResponseHeaderTimeout: cfg.UpstreamTimeout, MaxIdleConnsPerHost: 4})},
		Timeout:    cfg.UpstreamTimeout,
	}
	if !cfg.Identify {
		// Apps whose scopes do not cover the identity endpoint: no account
		// is learnt (x-series still checks the callback's domain_prefix).
		identifier.Identity = auth.Identity{FromExtra: preset.Identity.FromExtra}
		log.Info("merchant identification off (identify: false)")
	}
	notify := func(ev onboard.Event) {
		if notifier != nil {
			notifier.Notify(ev)
		}
	}
	locRefresher := &auth.LocationRefresher{Store: s, Identifier: identifier, Token: m.Token, Logger: log.Named("locations")}
	verifier := &onboard.Verifier{
		Store: s, Identifier: identifier, Token: m.Token, Retry: cfg.IdentifyRetry,
		Invalidate: m.Invalidate, Logger: log.Named("identify"),
		OnDropped: func(tenant string, _ store.Account) {
			notify(onboard.Event{Event: onboard.EventCandidateDropped, Tenant: tenant,
				Reason: "the re-authorization's grant belongs to another merchant account; the served grant stays", At: time.Now()})
		},
	}
	cs := &control.Server{
		Store:      s,
		Tokens:     m,
		AdminToken: cfg.AdminToken,
		Gatherer:   reg,
		Provider:   preset.Name,
		Locations:  locRefresher,
		Logger:     log.Named("admin"),
		// Console sessions are signed with a key derived from the encryption
		// key, so any replica accepts a session another one issued.
		SessionKey:  consoleSessionKey(cfg.EncryptionKey),
		ConsoleIdle: cfg.ConsoleSessionIdle,
		ConsoleOIDC: consoleOIDC(cfg),
	}
	if governor != nil {
		cs.RateLimits = governor
	}
	if cfg.RedirectURL != "" {
		linkKey := sha256.Sum256([]byte("lsproxy onboarding link key\x00" + cfg.EncryptionKey))
		cs.Onboarding = &onboard.Onboarder{
			Store:        s,
			Client:       oauthClient,
			Preset:       preset,
			AuthorizeURL: ep.Authorize,
			RedirectURL:  cfg.RedirectURL,
			Scopes:       scopes,
			PKCE:         pkce,
			LinkKey:      linkKey[:],
			LinkTTL:      cfg.AuthorizeLinkTTL,
			StateTTL:     cfg.StateTTL,
			SuccessURL:   cfg.SuccessURL,
			Logger:       log.Named("onboarding"),
			// After every code exchange: who is the merchant (SPEC §8)?
			// Asked on the tenant's own upstream host only.
			Identifier: identifier,
			Verifier:   verifier,
			Invalidate: m.Invalidate,
			OnActivated: func(tenant string) {
				notify(onboard.Event{Event: onboard.EventRecovered, Tenant: tenant, At: time.Now()})
			},
			OnConnected: func(tenant string) {
				notify(onboard.Event{Event: onboard.EventConnected, Tenant: tenant, At: time.Now()})
			},
		}
	}
	bg := &auth.BackgroundRefresher{
		Manager:     m,
		Store:       s,
		Interval:    cfg.RefresherInterval,
		Concurrency: cfg.RefresherConcurrency,
		IdleTTL:     preset.RefreshIdleTTL,
		IdleMargin:  cfg.RefreshIdleMargin,
		Logger:      log.Named("refresher"),
	}
	return &app{cfg: cfg, log: log, store: s, manager: m, bg: bg, proxy: tracedHandler(ph), control: tracedControl(cs.Handler()), locations: locations, locRefresher: locRefresher, notifier: notifier, verifier: verifier, governor: governor}, nil
}

// consoleSessionKey derives the console's session-signing key from the
// encryption key (a separate label: the key itself signs nothing).
func consoleSessionKey(encryptionKey string) []byte {
	k := sha256.Sum256([]byte("lsproxy console session key\x00" + encryptionKey))
	return k[:]
}

func overrideEndpoints(ep auth.Endpoints, cfg config.Config) auth.Endpoints {
	if cfg.UpstreamURL != "" {
		ep.API = cfg.UpstreamURL
	}
	if cfg.AuthorizeURL != "" {
		ep.Authorize = cfg.AuthorizeURL
	}
	if cfg.TokenURL != "" {
		ep.Token = cfg.TokenURL
	}
	return ep
}

// serve runs lsproxy until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg config.Config, logOut io.Writer) error {
	log, closeLog, err := newLogger(cfg, logOut)
	if err != nil {
		return err
	}
	defer closeLog() // flushes buffered access lines
	startupLog(log)
	// At least 32 MiB of allocation between collections while the heap is
	// small: GC was a proxy's largest cost over a bare one. GOGC overrides.
	if !gcheadroom.Keep(ctx, gcheadroom.DefaultHeadroom, 5*time.Second) {
		log.Info("GOGC set: GC headroom left to it", zap.String("GOGC", os.Getenv("GOGC")))
	}
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
	err = a.run(ctx, nil)
	a.waitNotifier(5 * time.Second)
	return err
}

// start runs a in the background and returns once both listeners are bound
// (or run failed first); done delivers run's result.
func (a *app) start(ctx context.Context) (proxyAddr, controlAddr string, done <-chan error, err error) {
	ready := make(chan [2]string, 1)
	runErr := make(chan error, 1)
	go func() { runErr <- a.run(ctx, func(p, c string) { ready <- [2]string{p, c} }) }()
	select {
	case addrs := <-ready:
		return addrs[0], addrs[1], runErr, nil
	case err := <-runErr:
		return "", "", nil, err
	}
}

// run listens on both listeners until ctx ends. ready, if not nil, is
// called with the bound addresses once both listen.
func (a *app) run(ctx context.Context, ready func(proxyAddr, controlAddr string)) error {
	errLog := zap.NewStdLog(a.log.Named("http"))
	proxySrv := newProxyServer(a.cfg, a.proxy, errLog)
	controlSrv := newControlServer(a.cfg, a.control, errLog)
	pl, err := listen(a.cfg.Listen, a.cfg.TLSCertFile, a.cfg.TLSKeyFile, proxySrv, a.log.Named("tls"))
	if err != nil {
		return fmt.Errorf("proxy listener: %w", err)
	}
	cl, err := listen(a.cfg.ControlListen, a.cfg.ControlTLSCertFile, a.cfg.ControlTLSKeyFile, controlSrv, a.log.Named("tls"))
	if err != nil {
		pl.Close()
		return fmt.Errorf("control listener: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if err := a.manager.Run(runCtx); err != nil {
			a.log.Error("change notifications unavailable; relying on cache_ttl", zap.Error(err))
		}
	}()

	go a.bg.Run(runCtx)
	if a.locRefresher != nil {
		go func() {
			if err := a.locRefresher.Run(runCtx); err != nil {
				a.log.Error("K-Series locations are not re-read after refreshes", zap.Error(err))
			}
		}()
	}
	if a.verifier != nil {
		go a.verifier.Run(runCtx)
	}
	if a.locations != nil {
		go func() {
			if err := a.locations.Run(runCtx); err != nil {
				a.log.Error("location routing does not follow changes; relying on cache_ttl", zap.Error(err))
			}
		}()
	}

	errc := make(chan error, 2)
	go func() { errc <- pl.serve(proxySrv) }()
	go func() { errc <- cl.serve(controlSrv) }()
	a.log.Info("lsproxy listening", zap.String("proxy", pl.Addr().String()), zap.Bool("proxy_tls", pl.tls),
		zap.String("control", cl.Addr().String()), zap.Bool("control_tls", cl.tls), zap.String("version", version))
	if ready != nil {
		ready(pl.Addr().String(), cl.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	a.log.Info("shutting down")
	cancel() // stop scanning and following changes; running refreshes finish below
	// Stop accepting and drain in-flight requests within shutdown_timeout;
	// then refreshes already started (some by a 401 at the very end of the
	// drain) get a budget of their own, a full token request plus the
	// write (SPEC §3 rule 16), so none is abandoned between the token
	// response and its write.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer scancel()
	_ = proxySrv.Shutdown(sctx)
	_ = controlSrv.Shutdown(sctx)
	if a.governor != nil {
		// No request is admitted any more: give the unsent units of this
		// replica's leases back to the shared budget (were it skipped,
		// they would drain with the bucket all the same).
		gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if err := a.governor.Release(gctx); err != nil {
			a.log.Warn("rate-limit leases not given back; they drain with the budget", zap.Error(err))
		}
		gcancel()
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), auth.ShutdownBudget(a.cfg.TokenTimeout))
	defer rcancel()
	if err := a.manager.FinishRefreshes(rctx); err != nil {
		a.log.Error("refreshes still running at the end of their shutdown budget", zap.Error(err))
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// logReplication says at startup whether refresh tokens wait for replica
// acknowledgements (SPEC §3 rule 14).
func logReplication(ctx context.Context, r *store.Redis, log *zap.Logger) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := r.DetectReplicas(dctx)
	switch {
	case err != nil:
		log.Warn("redis replication unknown; refreshes wait for replicas until it is read", zap.Error(err))
	case info.Connected == 0:
		log.Info("redis master has no replicas: refreshes do not wait for acknowledgements", zap.Int("connected_replicas", 0))
	case info.Wait == 0:
		log.Warn("redis master has replicas but redis_wait_replicas is 0: a failover can lose a lock and mark", zap.Int("connected_replicas", info.Connected))
	default:
		log.Info("redis master has replicas: lock and mark must be acknowledged before a refresh token is sent",
			zap.Int("connected_replicas", info.Connected), zap.Int("wait_replicas", info.Wait), zap.Duration("wait_timeout", info.Timeout))
	}
}
