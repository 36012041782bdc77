// Package emulator is a strict, observable stand-in for Lightspeed's OAuth2
// authorization servers and APIs. lsproxy's end-to-end and fault tests run
// against it, and `lsproxy dev` serves it as a local provider.
//
// One Emulator plays one provider (a Mode): the authorize endpoint, the token
// endpoint and the API, all served by the one http.Handler, at the real
// service's paths, so a preset can be tested by swapping only scheme and host.
// It is strict where the real services are or may be: authorization codes are
// one-time and short-lived, bound to the client, the redirect URI and the
// PKCE challenge; refresh tokens are single-use and rotate, and presenting a
// used one revokes the whole grant (reuse detection); client authentication
// is checked per mode. Faults (outages, slowness, lost responses, brownouts) are switched
// on and off at run time, and every decision is counted (Stats).
//
// Concurrency: all methods of an Emulator are safe for concurrent use, also
// while it serves requests. The emulator never logs or returns token, code or
// secret values except to the party that owns them (token responses,
// authorization redirects, IssueGrant and the control handler's /grant).
//
// Files:
//   - emulator.go: Emulator, its Config, modes and fault switches.
//   - stats.go: Stats and the per-tenant counts.
//   - oauth.go: the authorize and token endpoints (codes, PKCE, rotating
//     single-use refresh tokens). oauth_checks.go: client authentication
//     per mode and the checks of redirect URI, PKCE and scope.
//   - brownout.go: SetTokenBrownout, a degraded token endpoint (slow answers
//     whose grants are committed first, 503 bursts).
//   - api.go: the API endpoints behind bearer tokens.
//   - accounts.go: merchant accounts, users and locations; the identity
//     endpoints.
//   - signin.go: the sandbox sign-in page (Config.SignInPage): registered
//     users as login_hint links.
//   - ratelimit.go: RateLimit, the per-tenant API rate-limit buckets.
//   - control.go: ControlHandler, the knobs over HTTP for cmd/lsemulator.
package emulator
