// Package proxy is lsproxy's data plane: it resolves the tenant of a
// request, injects the tenant's bearer token and forwards to the one
// configured upstream with httputil.ReverseProxy.
//
// Files:
//   - handler.go: Handler (tenant header, header hygiene, Rewrite, the
//     request's end).
//   - transport.go: the upstream transport and the token-injecting
//     RoundTripper with its one replay after an upstream 401.
//   - clientauth.go: caller keys (Proxy-Authorization) and the tenants
//     each may use.
//   - errors.go: the request path's sentinel errors and errorFor, their
//     mapping to the error table in internal/httperr.
//   - location.go: the location header, routed to the active tenant
//     whose grant covers it (LocationResolver).
//   - upstream.go: the upstream URL, with X-Series' per-tenant domain
//     prefix.
//   - pacing.go: the Pacer (rate-limit governor) seen from the request.
//   - tracing.go: the request span's attributes (never a secret).
//   - metrics.go: request metrics with bounded labels.
//   - accesslog.go: the access line through zap without a per-request
//     allocation, for loggers logging.AccessLog does not serve (the
//     buffering and the fast JSON line are internal/logging's).
package proxy
