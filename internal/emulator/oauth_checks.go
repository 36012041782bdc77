package emulator

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
)

// Checks of the OAuth endpoints: client authentication and the
// parameters (redirect URI, PKCE verifier and challenge, scope).

// authenticateClient checks the client per Config.ClientAuth and returns the
// client id.
func (e *Emulator) authenticateClient(r *http.Request, form url.Values) (string, *oauthError) {
	fail := func(desc string) (string, *oauthError) {
		e.c.clientAuthFailures.Add(1)
		e.logf("client authentication failed: %s", desc)
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", desc}
	}
	user, pass, hasBasic := r.BasicAuth()
	switch e.cfg.ClientAuth {
	case AuthBasic:
		if form.Has("client_secret") {
			return fail("client credentials must be sent with HTTP Basic, not in the body")
		}
		if !hasBasic {
			return fail("HTTP Basic client authentication required")
		}
		// RFC 6749 §2.3.1: form-urlencoded before base64.
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			return fail("malformed Basic credentials")
		}
		if form.Has("client_id") && form.Get("client_id") != id {
			return fail("client_id in the body differs from the Basic credentials")
		}
		if !e.credentialsOK(id, secret) {
			return fail("wrong client credentials")
		}
		return id, nil
	default: // AuthBody
		if hasBasic {
			return fail("client credentials must be sent as client_id and client_secret form fields, not HTTP Basic")
		}
		if !form.Has("client_id") || !form.Has("client_secret") {
			return fail("client_id and client_secret form fields required")
		}
		id, secret := form.Get("client_id"), form.Get("client_secret")
		if !e.credentialsOK(id, secret) {
			return fail("wrong client credentials")
		}
		return id, nil
	}
}

func (e *Emulator) credentialsOK(id, secret string) bool {
	want, ok := e.cfg.ClientSecret, id == e.cfg.ClientID
	if !ok {
		want, ok = e.cfg.OtherClients[id]
	}
	// Compare the secret even for an unknown id, against the main one, so
	// timing says nothing about which ids exist.
	if !ok {
		want = e.cfg.ClientSecret
	}
	return subtle.ConstantTimeCompare([]byte(secret), []byte(want)) == 1 && ok
}

func validRedirectURI(s string) bool {
	if s == "" {
		return false
	}
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	return (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Fragment == "" && !strings.Contains(s, "#")
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// validVerifier: RFC 7636 §4.1, 43-128 characters of [A-Za-z0-9-._~].
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !unreserved(v[i]) {
			return false
		}
	}
	return true
}

// validChallenge: a base64url (unpadded) SHA-256, 43 characters.
func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

func unreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func scopeSubset(requested, granted string) bool {
	have := map[string]bool{}
	for _, s := range strings.Fields(granted) {
		have[s] = true
	}
	for _, s := range strings.Fields(requested) {
		if !have[s] {
			return false
		}
	}
	return true
}
