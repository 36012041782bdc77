// Package auth hands out tenants' Lightspeed access tokens and keeps them
// alive: it refreshes them so that a single-use refresh token is sent at
// most once across all replicas (SPEC §3), and it talks to the OAuth token
// endpoint.
//
// Which file does what:
//
//	manager.go    Manager and its options: Token (cache, then the slow
//	              path), Recover (upstream 401), ForceRefresh and Retry
//	              (admin), FinishRefreshes (shutdown)
//	cache.go      the in-process token cache: the fast path (SPEC §3 step
//	              1) with stale-while-revalidate, Invalidate, Run (other
//	              replicas' changes, re-subscription, loss reports, the
//	              count of lost notifications: rule 21), its bound
//	              (CacheMaxBytes, CLOCK eviction, CacheStats)
//	refresh.go    the acquisition path after a cache miss, top to bottom in
//	              SPEC order: singleflight, lock, re-read, takeover of an
//	              earlier mark (store clock + own monotonic grace), pacing
//	              for the token endpoint's budget, mark (acknowledged by
//	              replicas), the lease renewed to cover the send, grant with
//	              a full token_timeout, fenced write retried while the
//	              process lives, invalid_grant after a re-read, undo
//	refresh_answer.go  answers from a record without a refresh: useStored
//	              (flagged, refreshed elsewhere, fresh), staleOrUnavailable
//	lease.go      the holder's lease: lock renewal (never shorter than a
//	              send's cover), the synchronous renewal before a send,
//	              re-taking a lost lock, the mark heartbeat while a successor
//	              holds it
//	guard.go      the mass-invalid_grant guard (rules 15, 20): the fleet's
//	              state in the store (store.GuardState), pending reverts
//	              retried until done, GuardScope
//	backoff.go    the one retry delay
//	defaults.go   every default of the manager (config uses the same values),
//	               LockTTLFor and CheckLease (rule 17), ShutdownBudget (rule 16)
//	refresher.go  the background refresher (expiring and idle tenants):
//	              a worker pool, claims shared by replicas
//	aimd.go       its adaptive concurrency (AIMD on the token endpoint)
//	breakers.go   one token-endpoint circuit breaker per token host
//	              (X-Series stores), ErrNoTokenHost
//	oauth.go      OAuthClient: refresh and code grants, pacing (Pacer,
//	              TokenPacer), error classification
//	errors.go     sentinel errors and the error types callers switch on
//	metrics.go    Prometheus metrics
//	presets.go    Lightspeed endpoint presets
//	identity.go   Identity: how each preset learns the merchant account of
//	              a grant
//	locations.go  the K-Series business locations a grant reaches, kept
//	              fresh in the background
//	history.go    fixed failure reasons for a tenant's history
//	tracing.go    the refresh spans (lsproxy.refresh and its children)
//	transport.go  NewTokenTransport, the token endpoint's own transport
//
// Onboarding (authorize link, callback) and the webhook notifier live in
// package onboard.
//
// The tenant state changes themselves (mark, apply grant, flag, undo,
// import, authorize) are methods of store.Tenant (store/tenantstate.go),
// shared by the manager, the admin API and package onboard.
package auth
