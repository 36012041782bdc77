package emulator

import "sync/atomic"

// What an emulator counted, for tests and `lsproxy dev`: Stats and the
// per-tenant counts.

// Stats is a snapshot of the emulator's counters.
type Stats struct {
	AuthorizeRequests int64 // every request to the authorize path
	AuthorizeRejected int64 // answered with an error (page or redirect), denials included
	AuthorizeDenied   int64 // redirected with access_denied
	CodesIssued       int64

	TokenRequests      int64 // every request to the token path
	TokenOutages       int64 // answered by SetTokenOutage or a brownout burst
	TokenAbandoned     int64 // the client went away during a token delay, hold or brownout wait
	TokenDropped       int64 // responses dropped by SetTokenDropAfterGrant
	GrantsLost         int64 // grants made whose response never reached the client (dropped, or abandoned during a hold or brownout wait)
	TokenBadRequests   int64 // malformed: method, content type, parameters, grant type
	ClientAuthFailures int64 // 401 invalid_client
	CodeExchanges      int64 // successful code exchanges
	CodeRejected       int64 // failed code exchanges after client authentication
	CodeReuse          int64 // a used code presented again (its grant is revoked)
	RefreshGrants      int64 // successful refreshes (dropped responses included)
	RefreshRejected    int64 // failed refreshes after client authentication (invalid_grant, invalid_scope, invalid_request)
	ReuseDetected      int64 // a used refresh token presented again (its grant is revoked)
	GrantsIssued       int64 // by code exchange or IssueGrant
	GrantsRevoked      int64 // by reuse detection, code reuse or Revoke

	APIRequests     int64 // every request to an API path
	APIUnauthorized int64 // 401 because of the token (missing, unknown, expired, revoked)
	APIForbidden    int64 // 403 from /wrong-location, a location the grant does not cover, or another store's host
	APIBadRequests  int64 // 400: several Authorization headers, token in the query
	APIAbandoned    int64 // the client went away during an API delay
}

type counters struct {
	authorizeRequests, authorizeRejected, authorizeDenied, codesIssued          atomic.Int64
	tokenRequests, tokenOutages, tokenAbandoned, tokenDropped, tokenBadRequests atomic.Int64
	grantsLost                                                                  atomic.Int64
	clientAuthFailures, codeExchanges, codeRejected, codeReuse                  atomic.Int64
	refreshGrants, refreshRejected, reuseDetected, grantsIssued, grantsRevoked  atomic.Int64
	apiRequests, apiUnauthorized, apiForbidden, apiBadRequests, apiAbandoned    atomic.Int64
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats {
	c := &e.c
	return Stats{
		AuthorizeRequests:  c.authorizeRequests.Load(),
		AuthorizeRejected:  c.authorizeRejected.Load(),
		AuthorizeDenied:    c.authorizeDenied.Load(),
		CodesIssued:        c.codesIssued.Load(),
		TokenRequests:      c.tokenRequests.Load(),
		TokenOutages:       c.tokenOutages.Load(),
		TokenAbandoned:     c.tokenAbandoned.Load(),
		TokenDropped:       c.tokenDropped.Load(),
		GrantsLost:         c.grantsLost.Load(),
		TokenBadRequests:   c.tokenBadRequests.Load(),
		ClientAuthFailures: c.clientAuthFailures.Load(),
		CodeExchanges:      c.codeExchanges.Load(),
		CodeRejected:       c.codeRejected.Load(),
		CodeReuse:          c.codeReuse.Load(),
		RefreshGrants:      c.refreshGrants.Load(),
		RefreshRejected:    c.refreshRejected.Load(),
		ReuseDetected:      c.reuseDetected.Load(),
		GrantsIssued:       c.grantsIssued.Load(),
		GrantsRevoked:      c.grantsRevoked.Load(),
		APIRequests:        c.apiRequests.Load(),
		APIUnauthorized:    c.apiUnauthorized.Load(),
		APIForbidden:       c.apiForbidden.Load(),
		APIBadRequests:     c.apiBadRequests.Load(),
		APIAbandoned:       c.apiAbandoned.Load(),
	}
}

// RefreshCount is the number of successful refresh grants for tenant.
func (e *Emulator) RefreshCount(tenant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refreshCount[tenant]
}

// APICount is the number of API requests answered with a valid token of
// tenant (any status).
func (e *Emulator) APICount(tenant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.apiCount[tenant]
}

// ActiveGrants is the number of tenant's grants that are not revoked.
func (e *Emulator) ActiveGrants(tenant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, g := range e.grants[tenant] {
		if !g.revoked {
			n++
		}
	}
	return n
}
