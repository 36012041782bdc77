package auth

import (
	"fmt"
	"sort"
	"time"
)

// Endpoints are a preset's URLs in one environment.
type Endpoints struct {
	Authorize string
	Token     string // may contain {domain_prefix} (x-series)
	API       string
}

// Preset describes one Lightspeed series. Presets are data: adding a series
// means adding a table entry, not a code path.
type Preset struct {
	Name string
	// Environments maps "production" and "trial" to URLs. "trial" is the
	// K-Series trial / L-Series staging environment.
	Environments map[string]Endpoints
	// ClientAuth is how client credentials reach the token endpoint:
	// "basic" (HTTP Basic header, grant in the form body) or "body"
	// (client_id and client_secret as form fields).
	ClientAuth string
	// PKCE: send an S256 code challenge at authorize and the verifier at
	// code exchange.
	PKCE bool
	// Scopes requested when configuration names none.
	Scopes []string
	// RefreshIdleTTL is how long an unused refresh token lives when the
	// token response does not say (refresh_expires_in); 0 = does not expire.
	RefreshIdleTTL time.Duration
	// CallbackParams are extra callback query parameters kept on the tenant
	// record (x-series: domain_prefix, which names the token host).
	CallbackParams []string
	// RateCosts prices requests for the rate-limit governor by method ("*"
	// for the rest); nil means reads 1, writes 10 (R-Series' pricing).
	RateCosts map[string]float64
	// NoRateLimit turns the governor off for this preset by default
	// (LSPROXY_RATE_LIMIT overrides it).
	NoRateLimit bool
	// Identity is how the merchant account behind a grant is learnt after
	// every code exchange (and K-Series locations after every refresh);
	// zero = not documented, not identified.
	Identity Identity
}

// kSeriesIdentity: Financial API "Get Businesses", GET /f/data/businesses
// (api-docs.lsk.lightspeed.app/operation/operation-financial-apigetbusinesses):
// every business the token has access to, with its business locations
// (_embedded.businessList[].businessId/businessName/businessLocations[].blID/blName).
// The same API serves V1 and V2 clients.
var kSeriesIdentity = Identity{
	Path: "/f/data/businesses", Accounts: "_embedded.businessList", ID: "businessId", Name: "businessName",
	Locations: "businessLocations", LocationID: "blID", LocationName: "blName",
	Source: "api-docs.lsk.lightspeed.app: Financial API, Get Businesses",
}

// Presets by name. "custom" has no URLs: configuration supplies them all.
// Each entry notes where its data was checked (Lightspeed's public
// documentation, 2025-2026); docs/lightspeed.md explains the quirks.
var Presets = map[string]Preset{
	// K-Series "V2 authentication" (Keycloak realm k-series; all API clients
	// created since 2025-11-10): api-portal.lsk.lightspeed.app, "Migration
	// FAQ" and "Authorization Overview - V2". Token and refresh-token
	// lifetimes vary and come in expires_in / refresh_expires_in;
	// offline_access gives the long-lived refresh token. Keycloak accepts
	// an S256 code challenge from confidential clients, so PKCE is on.
	"k-series": {
		Name: "k-series",
		Environments: map[string]Endpoints{
			"production": {
				Authorize: "https://auth.lsk-prod.app/realms/k-series/protocol/openid-connect/auth",
				Token:     "https://auth.lsk-prod.app/realms/k-series/protocol/openid-connect/token",
				API:       "https://api.lsk.lightspeed.app",
			},
			"trial": {
				Authorize: "https://auth.lsk-demo.app/realms/k-series/protocol/openid-connect/auth",
				Token:     "https://auth.lsk-demo.app/realms/k-series/protocol/openid-connect/token",
				API:       "https://api.trial.lsk.lightspeed.app",
			},
		},
		ClientAuth: "basic",
		PKCE:       true,
		Scopes:     []string{"offline_access"},
		Identity:   kSeriesIdentity,
	},
	// K-Series "V1" clients (devp-… ids): api-portal.lsk.lightspeed.app,
	// "Authorization FAQ": access tokens 60 min, refresh tokens single-use
	// and expiring after 14 days unused, HTTPS redirect URLs. scope is
	// required at authorize: configure LSPROXY_SCOPES (e.g. "orders-api").
	"k-series-v1": {
		Name: "k-series-v1",
		Environments: map[string]Endpoints{
			"production": {
				Authorize: "https://api.lsk.lightspeed.app/oauth/authorize",
				Token:     "https://api.lsk.lightspeed.app/oauth/token",
				API:       "https://api.lsk.lightspeed.app",
			},
			"trial": {
				Authorize: "https://api.trial.lsk.lightspeed.app/oauth/authorize",
				Token:     "https://api.trial.lsk.lightspeed.app/oauth/token",
				API:       "https://api.trial.lsk.lightspeed.app",
			},
		},
		ClientAuth:     "basic",
		RefreshIdleTTL: 14 * 24 * time.Hour,
		Identity:       kSeriesIdentity,
	},
	// L-Series (resto API): lightspeedapis.com/resto/oauth2/v1, staging
	// test.lightspeedapis.com; PKCE S256 required, Basic client auth,
	// codes valid 30 s, refresh tokens single-use.
	"l-series": {
		Name: "l-series",
		Environments: map[string]Endpoints{
			"production": {
				Authorize: "https://lightspeedapis.com/resto/oauth2/v1/authorize",
				Token:     "https://lightspeedapis.com/resto/oauth2/v1/token",
				API:       "https://lightspeedapis.com/resto",
			},
			"trial": {
				Authorize: "https://test.lightspeedapis.com/resto/oauth2/v1/authorize",
				Token:     "https://test.lightspeedapis.com/resto/oauth2/v1/token",
				API:       "https://test.lightspeedapis.com/resto",
			},
		},
		ClientAuth:     "basic",
		PKCE:           true,
		RefreshIdleTTL: 30 * 24 * time.Hour,
		// Identity: none. The resto API documents no "who am I" endpoint
		// for a token (developers.lightspeedhq.com/resto-api); the tenant
		// is not identified and a re-authorization is not account-checked.
	},
	// O-Series (Kounta): apidoc.kounta.com/authentication. The documented
	// token URL is api.kounta.com/v1/token; Kounta picks the response
	// format from the extension or Accept header (406 without either), and
	// golang.org/x/oauth2 sends no Accept header, so the .json form is used.
	// client_id/client_secret go in the form body; access tokens live 1 h.
	"o-series": {
		Name: "o-series",
		Environments: map[string]Endpoints{
			"production": {
				Authorize: "https://my.kounta.com/authorize",
				Token:     "https://api.kounta.com/v1/token.json",
				API:       "https://api.kounta.com",
			},
		},
		ClientAuth: "body",
		// apidoc.kounta.com "Companies": GET /v1/companies/me(.json) is
		// the company of the authenticated user ({"id", "name", ...}).
		Identity: Identity{Path: "/v1/companies/me.json", ID: "id", Name: "name",
			Source: "apidoc.kounta.com: Companies, GET /v1/companies/me"},
	},
	// R-Series (Retail POS): developers.lightspeedhq.com/retail
	// "Authentication Overview": cloud.lightspeedapp.com/auth/oauth/…,
	// scopes employee:* (employee:all = full access).
	"r-series": {
		Name: "r-series",
		Environments: map[string]Endpoints{
			"production": {
				Authorize: "https://cloud.lightspeedapp.com/auth/oauth/authorize",
				Token:     "https://cloud.lightspeedapp.com/auth/oauth/token",
				API:       "https://api.lightspeedapp.com",
			},
		},
		ClientAuth: "body",
		Scopes:     []string{"employee:all"},
		// Leaky bucket: GET 1, PUT/POST/DELETE 10 (Lightspeed "Best
		// Practices", community.lightspeedhq.com/en/discussion/28).
		RateCosts: map[string]float64{"GET": 1, "HEAD": 1, "OPTIONS": 1, "*": 10},
		// developers.lightspeedhq.com/retail "Finding your Account ID":
		// GET /API/V3/Account.json answers the token's account
		// ({"Account": {"accountID", "name"}}), needed for every call.
		Identity: Identity{Path: "/API/V3/Account.json", Accounts: "Account", ID: "accountID", Name: "name",
			Source: "developers.lightspeedhq.com/retail: Account, GET /API/V3/Account.json"},
	},
	// X-Series (Vend): x-series-api.lightspeedhq.com/docs/authorization.
	// The token host is the retailer's domain_prefix, returned on the
	// callback; state is required (≥ 8 characters); refresh tokens rotate
	// (changelog 2025-03). Scopes are required but app-specific
	// (x-series-api.lightspeedhq.com/docs/scopes): configure LSPROXY_SCOPES.
	"x-series": {
		Name: "x-series",
		Environments: map[string]Endpoints{
			"production": {
				Authorize: "https://secure.retail.lightspeed.app/connect",
				Token:     "https://{domain_prefix}.retail.lightspeed.app/api/1.0/token",
				API:       "https://{domain_prefix}.retail.lightspeed.app",
			},
		},
		ClientAuth:     "body",
		CallbackParams: []string{"domain_prefix"},
		// x-series-api.lightspeedhq.com/docs/rate_limiting: the window
		// counts requests, whatever the method.
		RateCosts: map[string]float64{"*": 1},
		// The retailer is its domain_prefix (callback and token response,
		// x-series-api.lightspeedhq.com/docs/authorization): no request.
		Identity: Identity{FromExtra: "domain_prefix",
			Source: "x-series-api.lightspeedhq.com/docs/authorization: domain_prefix"},
	},
	"custom": {
		Name:         "custom",
		Environments: map[string]Endpoints{"production": {}, "trial": {}},
		ClientAuth:   "basic",
	},
}

// PresetNames lists the preset names, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LookupPreset returns the named preset's endpoints for env ("production"
// or "trial"). A series without a trial environment uses production URLs.
func LookupPreset(name, env string) (Preset, Endpoints, error) {
	p, ok := Presets[name]
	if !ok {
		return Preset{}, Endpoints{}, fmt.Errorf("auth: unknown provider preset %q", name)
	}
	ep, ok := p.Environments[env]
	if !ok {
		ep = p.Environments["production"]
	}
	return p, ep, nil
}
