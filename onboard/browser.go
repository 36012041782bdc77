package onboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// The OAuth state is bound to the browser that opened the link: ServeStart
// sets a cookie holding an HMAC of the state (keyed with LinkKey), and
// ServeCallback requires it before it takes the state. A callback URL
// replayed in another browser (login CSRF: an attacker's code delivered to
// a victim, or a victim's code to an attacker) is refused without using
// up the state.

// stateCookieLabel separates the cookie's MAC from any other use of the key.
const stateCookieLabel = "lsproxy/oauth-state-cookie/v1"

// stateCookiePrefix is the cookie name's prefix; each flow has its own
// cookie (two tabs do not overwrite each other's).
const stateCookiePrefix = "lsproxy_oauth_"

func (o *Onboarder) stateCookieName(state string) string {
	return stateCookiePrefix + state[:16]
}

func (o *Onboarder) stateCookieValue(state string) string {
	m := hmac.New(sha256.New, o.LinkKey)
	m.Write([]byte(stateCookieLabel + "|" + state))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// callbackCookiePath is the redirect URL's path: the cookie goes to the
// callback only.
func (o *Onboarder) callbackCookiePath() (p string, secure bool) {
	u, err := url.Parse(o.RedirectURL)
	if err != nil {
		return "/", false
	}
	p = u.Path
	if p == "" {
		p = "/"
	}
	return path.Clean(p), strings.EqualFold(u.Scheme, "https")
}

func (o *Onboarder) bindBrowser(w http.ResponseWriter, state string) {
	p, secure := o.callbackCookiePath()
	http.SetCookie(w, &http.Cookie{
		Name: o.stateCookieName(state), Value: o.stateCookieValue(state), Path: p,
		MaxAge: int(o.stateTTL().Seconds()), HttpOnly: true, Secure: secure,
		// Lax: sent on the provider's top-level redirect to the callback.
		SameSite: http.SameSiteLaxMode,
	})
}

// browserBound reports whether r carries the state's cookie.
func (o *Onboarder) browserBound(r *http.Request, state string) bool {
	c, err := r.Cookie(o.stateCookieName(state))
	if err != nil {
		return false
	}
	return hmac.Equal([]byte(c.Value), []byte(o.stateCookieValue(state)))
}
