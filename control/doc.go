// Package control serves lsproxy's control listener: health, readiness,
// Prometheus metrics, the admin API, the operator console and the OAuth
// callback.
//
// Files:
//   - control.go: Server, its routes, admin authentication, adminError
//     (sentinels to the error table in internal/httperr), and the
//     Onboarding interface that package onboard implements.
//   - admin.go: the admin API's tenant endpoints and TenantView, the
//     token-free view of a tenant.
//   - bulkimport.go: POST /admin/import and importTenant, the one import
//     write path it shares with PUT /admin/tenants/{id} (SPEC §3 rule 19):
//     importDecision holds its rules, importBatch applies them to a batch
//     of lines in a few store round trips.
//   - throttle.go: wrong admin tokens counted per client address (429
//     too_many_attempts), for the admin API and the console's sign-in.
//   - importcheck.go: the limits of an import shared with the CLI
//     (MaxImportLine, lifetimes, location ids), line counting before
//     decoding.
//   - ratelimit.go: the rate-limit governor seen from the admin API.
//   - tenantsgauge.go: lsproxy_tenants{status}, counted from the store.
//   - actions.go: each tenant's operator actions (store.ActionLog), recorded
//     after console actions and changing admin calls;
//     GET /admin/tenants/{id}/actions.
//   - webhooks.go: the webhook outbox endpoints (GET /admin/webhooks/events,
//     redeliver one or all) and WebhookEventView.
//   - list.go: GET /admin/tenants and listPage, the one paging loop (over
//     store.Lister's cursor, else Store.List) the console lists with too.
//   - console.go: the operator console under /console/ (routes, security
//     headers, session and CSRF checks, audit); it acts through the admin
//     handlers. console_session.go: signed session cookies and CSRF tokens.
//     console_pages.go: page and action handlers. console_view.go:
//     templates, reasons in words, live counts. console_webhooks.go: the
//     webhooks page and a tenant's webhook section. console_extra.go: the
//     unknown-tenant page, the rate budget in words, the link page after a
//     redirect. console_oidc.go: sign-in with an OpenID Connect provider. console/: the embedded
//     templates, script and stylesheet.
package control
