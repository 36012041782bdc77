// Package onboard connects a merchant's Lightspeed account to a tenant and
// tells the operator about tenants' state changes. The token lifecycle
// after onboarding is package auth's.
//
// Files:
//   - onboard.go: the Onboarder (fields, defaults, validation of its
//     configuration).
//   - link.go: signed, reusable authorize links (AuthorizeLink) and their
//     verification.
//   - start.go: ServeStart (GET /oauth/start): the single-use state with
//     the PKCE verifier in the shared store, the redirect to the provider.
//   - callback.go: ServeCallback (GET /oauth/callback): state taken once,
//     provider parameters checked, the code exchanged.
//   - grant.go: the exchanged grant applied to the tenant record with
//     compare-and-set, under the tenant lock and never over a refresh in
//     flight (SPEC §3 rule 19); exchange failures mapped to pages.
//   - identity.go: identification after the exchange (a grant is
//     discarded only when it is positively another account), the
//     once-per-process 401/403 hint, the location index update.
//   - verify.go: Verifier, finishing identifications in the background
//     (promotes or drops candidate grants); AcceptCandidate.
//   - browser.go: the OAuth state bound to the browser (HMAC cookie set at
//     /oauth/start, required at the callback).
//   - pages.go: the merchant's HTML pages, whose statuses and codes come
//     from the error table in internal/httperr.
//   - webhook.go: Notifier, writing tenant events (tenant.flagged,
//     tenant.recovered, tenant.connected, tenant.candidate_dropped) to the
//     store's outbox and delivering them from there (any replica; Standard
//     Webhooks payload, signatures and retry schedule; dead letters),
//     ParseSchedule.
//   - metrics.go: the webhook counters and the outbox gauges; outcomes.go:
//     the onboarding outcomes (lsproxy_onboarding_total).
package onboard
