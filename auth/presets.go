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
}

// Presets by name. "custom" has no URLs: configuration supplies them all.
var Presets = map[string]Preset{
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
		Scopes:     []string{"offline_access"},
	},
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
	},
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
	},
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
	},
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
	},
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
