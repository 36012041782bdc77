package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// consolePageSize is how many tenants one list page shows; consoleScanLimit
// bounds the records one filtered list page reads.
const (
	consolePageSize  = 25
	consoleScanLimit = 2000
)

// pageData is what every page template gets.
type pageData struct {
	Title    string
	Operator string
	CSRF     string
	Flash    string
	Error    string
	Body     any
}

func (c *console) data(r *http.Request, sess session, title string, body any) pageData {
	d := pageData{Title: title, Operator: sess.Operator, CSRF: c.sessions.csrf(sess), Body: body}
	if done := r.URL.Query().Get("done"); done != "" {
		d.Flash = doneText[done]
	}
	return d
}

// doneText is the notice shown after an action redirected back (the query
// names the action, never a value).
var doneText = map[string]string{
	"refreshed": "The access token was refreshed.",
	"retried":   "The flag was cleared and the stored grant works again.",
	"imported":  "The tenant was imported.",
	"deleted":   "The tenant was deleted.",

	"links_revoked":      "Every onboarding link sent so far stopped working; new links work.",
	"candidate_accepted": "The re-authorization's grant is served now.",
}

func (c *console) signinPage(w http.ResponseWriter, r *http.Request) {
	if _, err := c.sessions.get(r); err == nil {
		http.Redirect(w, r, "/console/tenants", http.StatusSeeOther)
		return
	}
	d := pageData{Title: "Sign in", Body: c.signinBody()}
	if r.URL.Query().Get("expired") != "" {
		d.Error = "Your session expired. Sign in again."
	}
	c.pages.render(w, http.StatusOK, "signin", d)
}

// signin exchanges the admin token (form body only) for a session cookie.
func (c *console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
	_ = r.ParseForm()
	op := strings.TrimSpace(r.PostForm.Get("operator"))
	d := pageData{Title: "Sign in", Body: c.signinBody()}
	client := clientAddr(r)
	if blocked, wait := c.s.attempts.blocked(client); blocked {
		d.Error = "Too many wrong admin tokens from your address. Wait a minute and try again."
		c.audit(r, op, "signin", "throttled", http.StatusTooManyRequests)
		httperr.Error{Kind: httperr.TooManyAttempts, RetryAfter: wait}.SetHeaders(w.Header())
		c.pages.render(w, http.StatusTooManyRequests, "signin", d)
		return
	}
	switch {
	case !validOperator(op):
		d.Error = "Enter your name (letters, digits, . _ @ -; up to 64) so that your actions are logged under it."
		c.audit(r, "", "signin", "", http.StatusBadRequest)
		c.pages.render(w, http.StatusBadRequest, "signin", d)
		return
	case !c.adminTokenOK(r.PostForm.Get("token")):
		c.s.attempts.failed(client)
		d.Error = "That admin token is not right."
		c.audit(r, op, "signin", "bad_token", http.StatusUnauthorized)
		c.pages.render(w, http.StatusUnauthorized, "signin", d)
		return
	}
	if err := c.sessions.set(w, r, c.sessions.start(op)); err != nil {
		c.s.Logger.Warn("console session not stored", zap.Error(err))
		d.Error = "The store is unavailable: the session could not be kept. Try again in a moment."
		c.audit(r, op, "signin", "store_unavailable", http.StatusServiceUnavailable)
		c.pages.render(w, http.StatusServiceUnavailable, "signin", d)
		return
	}
	c.audit(r, op, "signin", "", http.StatusSeeOther)
	http.Redirect(w, r, "/console/tenants", http.StatusSeeOther)
}

func (c *console) signout(w http.ResponseWriter, r *http.Request, sess session) int {
	if err := c.sessions.end(w, r, sess); err != nil {
		c.s.Logger.Warn("console session not deleted", zap.Error(err))
		c.pages.fail(w, http.StatusServiceUnavailable, "Store unavailable", "The session could not be ended in the store. Try signing out again.")
		return http.StatusServiceUnavailable
	}
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
	return http.StatusSeeOther
}

// row is a tenant as a console page shows it: the admin API's JSON view,
// decoded both into TenantView and into a map (so that fields other parts
// add to the view, such as account, locations or a rate budget, show up).
type row struct {
	V   TenantView
	Raw map[string]any
}

func (c *console) getRow(r *http.Request, id string) (row, adminResult) {
	res := c.callAdmin(r.Context(), http.MethodGet, tenantPath(id), nil)
	var rw row
	if res.Status == http.StatusOK {
		_ = json.Unmarshal(res.Body, &rw.V)
		rw.Raw = res.obj()
	}
	return rw, res
}

// listBody is the tenants page.
type listBody struct {
	Query, Status string
	Rows          []row
	Next          string // cursor of the next page, "" on the last
	Scanned       bool   // the scan limit ended the page early
	Counts        counts
}

// tenants lists tenants in id order: an id substring search, a status
// filter and paging with listPage ("after" is its opaque cursor).
func (c *console) tenants(w http.ResponseWriter, r *http.Request, sess session) {
	q := r.URL.Query()
	body := listBody{Query: strings.TrimSpace(q.Get("q")), Status: q.Get("status")}
	after := q.Get("after")
	if body.Status != "" && !store.ValidStatus(store.Status(body.Status)) {
		body.Status = ""
	}
	pos, err := decodeCursor(after)
	lq := listQuery{limit: consolePageSize, cursor: pos, maxReads: consoleScanLimit}
	if needle := strings.ToLower(body.Query); needle != "" {
		lq.match = func(id string) bool { return strings.Contains(strings.ToLower(id), needle) }
	}
	var rows []row
	if err == nil {
		rows, pos, body.Scanned, err = listPage(r.Context(), c.s.Store, lq, func(_ context.Context, id string) (row, bool, error) {
			rw, res := c.getRow(r, id)
			switch {
			case res.Status == http.StatusNotFound:
				return row{}, false, nil // deleted meanwhile
			case res.Status != http.StatusOK:
				return row{V: TenantView{ID: id}, Raw: map[string]any{"error": res.message()}}, true, nil
			}
			return rw, body.Status == "" || string(rw.V.Status) == body.Status, nil
		})
	}
	if errors.Is(err, errBadCursor) {
		c.pages.fail(w, http.StatusBadRequest, "Invalid page link", "This page link is not one the console made. Start again from the first page.")
		return
	}
	if err != nil {
		c.pages.fail(w, http.StatusServiceUnavailable, "Store unavailable", "The tenant store did not answer. Try again in a moment.")
		return
	}
	body.Rows = rows
	if pos != "" {
		body.Next = encodeCursor(pos)
	}
	body.Counts = c.counts.get(r.Context())
	c.pages.render(w, http.StatusOK, "tenants", c.data(r, sess, "Tenants", body))
}

// tenantBody is the tenant page.
type tenantBody struct {
	T       row
	Link    string // an authorize link just created (never in a URL)
	Rebind  bool
	Counts  counts
	Problem string
	// Webhooks is the tenant's webhook section (console_webhooks.go).
	Webhooks tenantWebhooks
	// Actions are the operators' last actions on it (actions.go).
	Actions []actionRow
}

func (c *console) tenant(w http.ResponseWriter, r *http.Request, sess session) {
	b := tenantBody{}
	if nonce := r.URL.Query().Get("link"); nonce != "" {
		if l, ok := c.shownLinkFor(r, sess, r.PathValue("id"), nonce); ok {
			b.Link, b.Rebind = l.Link, l.Rebind
		} else {
			b.Problem = "That authorization link is no longer shown here (it is shown for 15 minutes, to the operator who created it). It still works until it expires; create another to see one."
		}
	}
	c.renderTenant(w, r, sess, http.StatusOK, b)
}

// renderTenant shows the tenant page with b's link or problem; it returns
// the status it answered.
func (c *console) renderTenant(w http.ResponseWriter, r *http.Request, sess session, status int, b tenantBody) int {
	id := r.PathValue("id")
	if !store.ValidTenantID(id) {
		c.pages.fail(w, http.StatusBadRequest, "Invalid tenant id", "A tenant id is 1 to 128 letters, digits and . _ : - (starting with a letter or digit).")
		return http.StatusBadRequest
	}
	rw, res := c.getRow(r, id)
	if res.Status == http.StatusNotFound && res.obj()["error"] == "unknown_tenant" {
		return c.unknownTenant(w, r, sess, id, b.Problem)
	}
	if res.Status != http.StatusOK {
		c.pages.fail(w, res.Status, "Tenant "+id, res.message())
		return res.Status
	}
	b.T, b.Counts = rw, c.counts.get(r.Context())
	b.Webhooks = c.tenantWebhooks(r, id, c.sessions.csrf(sess))
	b.Actions = c.tenantActions(r, id)
	c.pages.render(w, status, "tenant", c.data(r, sess, "Tenant "+id, b))
	return status
}

// authorize creates an authorize link and shows it on the tenant page (in
// the POST answer only: a link is never put in a URL). Rebind is passed to
// the admin API only when the operator ticked it.
func (c *console) authorize(w http.ResponseWriter, r *http.Request, sess session) int {
	id := r.PathValue("id")
	if !store.ValidTenantID(id) {
		return c.renderTenant(w, r, sess, 0, tenantBody{})
	}
	var body any
	rebind := r.PostForm.Get("rebind") == "yes"
	if rebind {
		body = map[string]bool{"rebind": true}
	}
	res := c.callAdmin(r.Context(), http.MethodPost, tenantPath(id, "/authorize"), body)
	link, _ := res.obj()["authorize_url"].(string)
	if res.Status != http.StatusOK || link == "" {
		return c.renderTenant(w, r, sess, res.Status, tenantBody{Problem: "No link was created: " + res.message()})
	}
	note := linkExpiry(link)
	if rebind {
		note += " (may connect another account)"
	}
	setActionNote(r, note)
	if nonce := c.keepLink(r, sess, id, link, rebind); nonce != "" { // POST-redirect-GET (console_extra.go)
		http.Redirect(w, r, "/console/tenants/"+url.PathEscape(id)+"?link="+nonce+"#link", http.StatusSeeOther)
		return http.StatusOK
	}
	return c.renderTenant(w, r, sess, http.StatusOK, tenantBody{Link: link, Rebind: rebind})
}

// redirectOr answers 303 to the tenant page with a notice when the admin
// call succeeded, else the tenant page with its problem.
func (c *console) redirectOr(w http.ResponseWriter, r *http.Request, sess session, res adminResult, done, what string) int {
	if res.Status/100 == 2 {
		http.Redirect(w, r, "/console/tenants/"+url.PathEscape(r.PathValue("id"))+"?done="+done, http.StatusSeeOther)
		return res.Status
	}
	msg := res.message()
	if res.Status == http.StatusNotFound && what == "retry" && res.obj()["error"] != "unknown_tenant" {
		msg = "this lsproxy version has no retry (POST /admin/tenants/{id}/retry)"
	}
	return c.renderTenant(w, r, sess, res.Status, tenantBody{Problem: "The " + what + " did not happen: " + msg})
}

// tenantCall is a console action that is one admin call on the tenant
// (POST /admin/tenants/{id}<suffix>): on success a redirect with the flash
// done, otherwise the tenant page naming what did not happen.
func (c *console) tenantCall(suffix, done, what string) func(http.ResponseWriter, *http.Request, session) int {
	return func(w http.ResponseWriter, r *http.Request, sess session) int {
		id := r.PathValue("id")
		if !store.ValidTenantID(id) {
			return c.renderTenant(w, r, sess, 0, tenantBody{})
		}
		return c.redirectOr(w, r, sess, c.callAdmin(r.Context(), http.MethodPost, tenantPath(id, suffix), nil), done, what)
	}
}

// deletePage asks the operator to type the tenant id to confirm.
func (c *console) deletePage(w http.ResponseWriter, r *http.Request, sess session) {
	id := r.PathValue("id")
	if !store.ValidTenantID(id) {
		c.renderTenant(w, r, sess, 0, tenantBody{})
		return
	}
	c.pages.render(w, http.StatusOK, "delete", c.data(r, sess, "Delete "+id, map[string]string{"ID": id}))
}

func (c *console) del(w http.ResponseWriter, r *http.Request, sess session) int {
	id := r.PathValue("id")
	if !store.ValidTenantID(id) {
		return c.renderTenant(w, r, sess, 0, tenantBody{})
	}
	if r.PostForm.Get("confirm") != id {
		d := c.data(r, sess, "Delete "+id, map[string]string{"ID": id})
		d.Error = "Type the tenant id exactly to confirm; nothing was deleted."
		c.pages.render(w, http.StatusBadRequest, "delete", d)
		return http.StatusBadRequest
	}
	res := c.callAdmin(r.Context(), http.MethodDelete, tenantPath(id), nil)
	if res.Status != http.StatusNoContent {
		return c.renderTenant(w, r, sess, res.Status, tenantBody{Problem: "The tenant was not deleted: " + res.message()})
	}
	c.counts.reset()
	http.Redirect(w, r, "/console/tenants?done=deleted", http.StatusSeeOther)
	return http.StatusNoContent
}

// importForm is the import page; it is never filled with token values.
type importForm struct {
	ID, ExpiresIn string
}

func (c *console) importPage(w http.ResponseWriter, r *http.Request, sess session) {
	c.pages.render(w, http.StatusOK, "import", c.data(r, sess, "Import a tenant", importForm{}))
}

// importTenant imports one tenant through PUT /admin/tenants/{id}
// (?overwrite=true when ticked). On a
// problem the form comes back with the id and expiry but without the
// tokens.
func (c *console) importTenant(w http.ResponseWriter, r *http.Request, sess session) int {
	f := r.PostForm
	form := importForm{ID: strings.TrimSpace(f.Get("id")), ExpiresIn: strings.TrimSpace(f.Get("expires_in"))}
	fail := func(status int, msg string) int {
		d := c.data(r, sess, "Import a tenant", importForm{ID: form.ID, ExpiresIn: form.ExpiresIn})
		d.Error = msg
		c.pages.render(w, status, "import", d)
		return status
	}
	if !store.ValidTenantID(form.ID) {
		form.ID = ""
		return fail(http.StatusBadRequest, "A tenant id is 1 to 128 letters, digits and . _ : - (starting with a letter or digit).")
	}
	body := map[string]any{"refresh_token": strings.TrimSpace(f.Get("refresh_token"))}
	if at := strings.TrimSpace(f.Get("access_token")); at != "" {
		body["access_token"] = at
	}
	if form.ExpiresIn != "" {
		n, err := strconv.ParseInt(form.ExpiresIn, 10, 64)
		if err != nil {
			return fail(http.StatusBadRequest, "Expires in must be a whole number of seconds.")
		}
		body["expires_in"] = n
	}
	path := tenantPath(form.ID)
	if f.Get("overwrite") == "true" {
		path += "?overwrite=true"
	}
	res := c.callAdmin(r.Context(), http.MethodPut, path, body)
	if res.Status != http.StatusOK && res.Status != http.StatusCreated {
		return fail(res.Status, "Nothing was imported: "+res.message())
	}
	c.counts.reset()
	http.Redirect(w, r, "/console/tenants/"+url.PathEscape(form.ID)+"?done=imported", http.StatusSeeOther)
	return res.Status
}

// countsJSON feeds the live counts at the top of every page. It does not
// reset the idle clock: an open tab alone keeps no session alive.
func (c *console) countsJSON(w http.ResponseWriter, r *http.Request) {
	if _, err := c.sessions.get(r); err != nil {
		httperr.Write(w, httperr.Error{Kind: httperr.ConsoleSignedOut})
		return
	}
	httperr.WriteJSON(w, http.StatusOK, c.counts.get(r.Context()))
}
