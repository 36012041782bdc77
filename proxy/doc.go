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
//   - metrics.go: request metrics with bounded labels.
//   - accesslog.go: the access line through zap without a per-request
//     allocation, for loggers logging.AccessLog does not serve (the
//     buffering and the fast JSON line are internal/logging's).
package proxy
