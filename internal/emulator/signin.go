package emulator

import (
	"html/template"
	"net/http"
	"net/url"
	"sort"
)

// signInLogin is one user offered on the sign-in page.
type signInLogin struct {
	Login, Account, Locations string
	URL                       string
}

// signInLoginsLocked lists the registered users, sorted; e.mu held.
func (e *Emulator) signInLoginsLocked() []signInLogin {
	var out []signInLogin
	for login := range e.users {
		a, locs := e.accountOfLocked(login)
		names := ""
		for i, l := range locs {
			if i > 0 {
				names += ", "
			}
			names += l.Name + " (" + l.ID + ")"
		}
		out = append(out, signInLogin{Login: login, Account: a.Name + " (" + a.ID + ")", Locations: names})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Login < out[j].Login })
	return out
}

var signInTemplate = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lightspeed emulator · sign in</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:8vh auto;padding:0 1rem}li{margin:.5rem 0}.muted{color:#666}</style>
</head><body>
<h1>Sign in to the Lightspeed emulator</h1>
<p class="muted">A sandbox sign-in page: choose who signs in (the same as adding <code>login_hint=LOGIN</code> to the authorize URL).</p>
<ul>
{{range .Logins}}<li><a href="{{.URL}}" id="login-{{.Login}}">{{.Login}}</a> · {{.Account}}{{if .Locations}} · locations {{.Locations}}{{end}}</li>
{{else}}<li>No users registered.</li>{{end}}
</ul>
<p><a href="{{.Deny}}" id="deny">Deny access</a></p>
</body></html>
`))

// serveSignInPage answers the sandbox sign-in page for an authorize
// request r that named nobody.
func (e *Emulator) serveSignInPage(w http.ResponseWriter, r *http.Request, logins []signInLogin) {
	with := func(k, v string) string {
		q := r.URL.Query()
		q.Set(k, v)
		u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
		return u.String()
	}
	for i := range logins {
		logins[i].URL = with("login_hint", logins[i].Login)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = signInTemplate.Execute(w, map[string]any{"Logins": logins, "Deny": with("emulator_deny", "1")})
}
