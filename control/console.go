package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// The console's templates and static files are embedded: it needs nothing
// from the internet.
//
//go:embed console/templates/*.html console/static/*
var consoleFiles embed.FS

// consoleCSP allows scripts, styles and fetches from the control listener
// itself and nothing else: no inline script, no CDN, no framing.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// console serves the operator console under /console/. It acts through the
// admin API's own handlers (s.adminMux), so that what an operator sees and
// does is exactly what the admin API shows and does.
type console struct {
	s        *Server
	sessions *sessions
	pages    *consolePages
	counts   *countCache
	csrf     *http.CrossOriginProtection
	oidc     *oidcLogin // nil: no OIDC sign-in (console_oidc.go)
}

// mountConsole registers /console/ on mux. With no admin token the console
// is off: every /console/ path answers 404.
func (s *Server) mountConsole(mux *http.ServeMux) {
	if s.AdminToken == "" {
		mux.HandleFunc("/console/", func(w http.ResponseWriter, _ *http.Request) {
			consoleHeaders(w.Header())
			http.Error(w, "the console is disabled: set LSPROXY_ADMIN_TOKEN", http.StatusNotFound)
		})
		return
	}
	c := &console{
		s:        s,
		sessions: newSessions(s.SessionKey, s.AdminToken, sessionStore(s.Store), s.ConsoleIdle, s.Now),
		pages:    mustParsePages(s.Now),
		counts:   &countCache{store: s.Store, now: s.Now},
		csrf:     http.NewCrossOriginProtection(),
	}
	c.csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.audit(r, "", "csrf_refused", "", http.StatusForbidden)
		c.pages.fail(w, http.StatusForbidden, "Request refused", "This request came from another site or an old page. Reload the console and try again.")
	}))
	static, _ := fs.Sub(consoleFiles, "console/static")
	cm := http.NewServeMux()
	cm.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	cm.HandleFunc("GET /console/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/tenants", http.StatusSeeOther)
	})
	cm.HandleFunc("GET /console/signin", c.signinPage)
	cm.HandleFunc("POST /console/signin", c.signin)
	cm.HandleFunc("POST /console/signout", c.action("signout", c.signout))
	cm.HandleFunc("GET /console/tenants", c.view(c.tenants))
	cm.HandleFunc("GET /console/tenants/{id}", c.view(c.tenant))
	cm.HandleFunc("GET /console/tenants/{id}/delete", c.view(c.deletePage))
	cm.HandleFunc("GET /console/import", c.view(c.importPage))
	cm.HandleFunc("GET /console/counts", c.countsJSON)
	cm.HandleFunc("POST /console/tenants/{id}/authorize", c.action("authorize", c.authorize))
	cm.HandleFunc("POST /console/tenants/{id}/refresh", c.action("refresh", c.tenantCall("/refresh", "refreshed", "refresh")))
	cm.HandleFunc("POST /console/tenants/{id}/retry", c.action("retry", c.tenantCall("/retry", "retried", "retry")))
	cm.HandleFunc("POST /console/tenants/{id}/revoke-links", c.action("revoke_links", c.tenantCall("/revoke-links", "links_revoked", "revocation")))
	cm.HandleFunc("POST /console/tenants/{id}/accept-candidate", c.action("accept_candidate", c.tenantCall("/accept-candidate", "candidate_accepted", "acceptance")))
	cm.HandleFunc("POST /console/tenants/{id}/delete", c.action("delete", c.del))
	cm.HandleFunc("POST /console/import", c.action("import", c.importTenant))
	c.mountWebhooks(cm)
	c.mountOIDC(cm)
	cm.HandleFunc("/console/", func(w http.ResponseWriter, _ *http.Request) {
		c.pages.fail(w, http.StatusNotFound, "Not found", "There is no such console page.")
	})
	guarded := c.csrf.Handler(cm)
	mux.Handle("/console/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w.Header())
		guarded.ServeHTTP(w, r)
	}))
}

// sessionStore is st's session keeping, or nil (sessions in process).
func sessionStore(st store.Store) store.Sessions {
	if ss, ok := st.(store.Sessions); ok {
		return ss
	}
	return nil
}

// consoleHeaders are set on every console response.
func consoleHeaders(h http.Header) {
	httperr.PageHeaders(h, consoleCSP)
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// adminTokenOK compares got with the admin token in constant time.
func (c *console) adminTokenOK(got string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(c.s.AdminToken))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// view wraps a page handler: without a valid session the browser is sent
// to the sign-in page (saying so when the session expired).
func (c *console) view(h func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := c.sessions.get(r)
		if c.storeFailed(w, err) {
			return
		}
		if err != nil {
			c.toSignin(w, r, err)
			return
		}
		c.sessions.touch(w, r, sess)
		h(w, r, sess)
	}
}

// storeFailed answers 503 when err is the store failing to say whether a
// session lives (the cookie is kept: the session may well be alive).
func (c *console) storeFailed(w http.ResponseWriter, err error) bool {
	if err == nil || errors.Is(err, errNoSession) || errors.Is(err, errSessionExpired) || errors.Is(err, errSessionInvalid) {
		return false
	}
	c.s.Logger.Warn("console session lookup failed", zap.Error(err))
	c.pages.fail(w, http.StatusServiceUnavailable, "Store unavailable", "The console cannot check your session right now. Try again in a moment; nothing was changed.")
	return true
}

func (c *console) toSignin(w http.ResponseWriter, r *http.Request, err error) {
	c.sessions.clear(w, r)
	target := "/console/signin"
	if errors.Is(err, errSessionExpired) {
		target += "?expired=1"
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// action wraps a state-changing handler: it needs a valid session and the
// session's CSRF token in the form (the cross-origin check ran before), and
// writes one "admin" audit line naming the operator. A refused action
// changes nothing.
func (c *console) action(name string, h func(http.ResponseWriter, *http.Request, session) int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		sess, err := c.sessions.get(r)
		if c.storeFailed(w, err) {
			return
		}
		if err != nil {
			c.sessions.clear(w, r)
			c.audit(r, "", "session_refused", name, http.StatusUnauthorized)
			msg := "Sign in to the console first."
			if errors.Is(err, errSessionExpired) {
				msg = "Your session expired. Sign in again; nothing was changed."
			}
			c.pages.fail(w, http.StatusUnauthorized, "Signed out", msg)
			return
		}
		if err := r.ParseForm(); err != nil || !c.sessions.csrfOK(sess, r.PostForm.Get("csrf")) {
			c.audit(r, sess.Operator, "csrf_refused", name, http.StatusForbidden)
			c.pages.fail(w, http.StatusForbidden, "Request refused", "This form is stale or did not come from the console. Reload the page and try again; nothing was changed.")
			return
		}
		c.sessions.touch(w, r, sess)
		r = withActionNote(r)
		status := h(w, r, sess)
		c.audit(r, sess.Operator, name, "", status)
		if tenant := actionTenant(r, name); tenant != "" && status != http.StatusNotFound { // actions.go
			c.s.recordAction(r.Context(), tenant, sess.Operator, name, status, "", actionNote(r))
		}
	}
}

// audit writes the console's "admin" log line, in the admin API's style:
// who is "console", operator the name the operator signed in with.
func (c *console) audit(r *http.Request, operator, action, refused string, status int) {
	tenant := r.PathValue("id")
	if !store.ValidTenantID(tenant) {
		tenant = ""
	}
	level := zap.InfoLevel
	if status >= 400 && (status == http.StatusUnauthorized || status == http.StatusForbidden) {
		level = zap.WarnLevel
	}
	fields := []zap.Field{zap.String("who", "console"), zap.String("operator", operator), zap.String("action", action),
		zap.String("tenant", tenant), zap.String("method", r.Method), zap.Int("status", status), zap.String("remote", r.RemoteAddr)}
	if refused != "" {
		fields = append(fields, zap.String("refused", refused))
	}
	if ce := c.s.Logger.Check(level, "admin"); ce != nil {
		ce.Write(fields...)
	}
}

// adminResult is an admin API answer obtained in-process.
type adminResult struct {
	Status int
	Body   []byte
}

// obj decodes the answer as a JSON object (nil if it is not one).
func (a adminResult) obj() map[string]any {
	var m map[string]any
	if json.Unmarshal(a.Body, &m) != nil {
		return nil
	}
	return m
}

// message is the admin API's fixed error message (never a secret).
func (a adminResult) message() string {
	m := a.obj()
	if s, _ := m["message"].(string); s != "" {
		return s
	}
	return http.StatusText(a.Status)
}

// callAdmin runs one admin API request through the admin handlers, past
// the bearer check (the console session stands in for it) and past the
// admin audit (the console writes its own line).
func (c *console) callAdmin(ctx context.Context, method, path string, body any) adminResult {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{h: http.Header{}}
	c.s.adminMux.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return adminResult{Status: rec.status, Body: rec.buf.Bytes()}
}

// recorder is a minimal in-memory http.ResponseWriter.
type recorder struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.buf.Write(b)
}

// tenantPath is the admin API path of tenant id (validated by the caller).
func tenantPath(id string, suffix ...string) string {
	return "/admin/tenants/" + id + strings.Join(suffix, "")
}
