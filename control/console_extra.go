package control

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Console pages and words added in issue 24's round two: the unknown-tenant
// page and the rate budget in words.

// unknownTenant answers 404 with the console's navigation and a form that
// creates an authorization link for id (which makes a placeholder the
// merchant's authorization completes). problem, when set, says why the
// last action failed.
func (c *console) unknownTenant(w http.ResponseWriter, r *http.Request, sess session, id, problem string) int {
	d := c.data(r, sess, "Tenant "+id, map[string]string{"ID": id})
	d.Error = problem
	c.pages.render(w, http.StatusNotFound, "unknown-tenant", d)
	return http.StatusNotFound
}

// budgetWords says a rate budget (ratelimit.Budget's JSON) in words; ""
// when it is not one.
func budgetWords(b map[string]any) string {
	num := func(k string) (float64, bool) { v, ok := b[k].(float64); return v, ok }
	at := func(k string) string {
		s, _ := b[k].(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ""
		}
		return t.UTC().Format("15:04:05 UTC")
	}
	units := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	var out string
	switch b["kind"] {
	case "bucket":
		level, _ := num("level")
		size, _ := num("size")
		drip, _ := num("drip_rate")
		if size <= 0 {
			return ""
		}
		out = fmt.Sprintf("%s of %s units free (%.0f%% used), refilling %s per second", units(max(size-level, 0)), units(size), 100*level/size, units(drip))
	case "window":
		limit, _ := num("limit")
		used, _ := num("used")
		if limit <= 0 {
			return ""
		}
		out = fmt.Sprintf("%s of %s requests left in this window", units(max(limit-used, 0)), units(limit))
		if r := at("reset_at"); r != "" {
			out += ", which resets at " + r
		}
	}
	if blocked := at("blocked_until"); blocked != "" {
		if out != "" {
			out += "; "
		}
		out += "Lightspeed asked to wait (429) until " + blocked
	}
	return out
}

// actionRow is an operator action as the tenant page shows it.
type actionRow struct {
	When, Who, What, Result, Detail string
	OK                              bool
}

// actionWords name the console's and the admin API's actions.
var actionWords = map[string]string{
	"authorize": "created an authorization link", "refresh": "forced a refresh", "retry": "retried the stored grant",
	"import": "imported tokens", "delete": "deleted the tenant", "bulk_import": "imported tokens (bulk)",
	"locations": "re-read the account and locations",
}

func (c *console) tenantActions(r *http.Request, id string) []actionRow {
	res := c.callAdmin(r.Context(), http.MethodGet, tenantPath(id, "/actions"), nil)
	var v ActionsView
	if res.Status != http.StatusOK || json.Unmarshal(res.Body, &v) != nil {
		return nil
	}
	out := make([]actionRow, 0, len(v.Actions))
	for _, a := range v.Actions {
		what := actionWords[a.Action]
		if what == "" {
			what = a.Action
		}
		who := a.Operator
		if who == "admin-token" {
			who = "admin API"
		}
		row := actionRow{When: c.pages.when(a.At), Who: who, What: what, Detail: a.Detail, OK: a.Result == "ok"}
		row.Result = "done"
		if !row.OK {
			row.Result = "failed (" + a.Result + ")"
		}
		out = append(out, row)
	}
	return out
}

// Authorize links after a POST: the console answers the POST with a
// redirect (a reload repeats nothing), and the link waits for the GET in
// the shared store (any replica answers), under a random nonce bound to
// the operator's session, for linkShowTTL. The link is never in a URL.
const linkShowTTL = 15 * time.Minute

type shownLink struct {
	Tenant  string `json:"tenant"`
	Link    string `json:"link"`
	Rebind  bool   `json:"rebind,omitempty"`
	Session string `json:"session"` // sha256 of the session id
}

func sessionTag(sess session) string {
	h := sha256.Sum256([]byte("console link\x00" + sess.ID))
	return hex.EncodeToString(h[:])
}

func linkKey(nonce string) string { return "console-link:" + nonce }

// keepLink stores link for the GET after the redirect and returns the
// nonce; "" when the store did not take it.
func (c *console) keepLink(r *http.Request, sess session, tenant, link string, rebind bool) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return ""
	}
	nonce := hex.EncodeToString(b[:])
	raw, _ := json.Marshal(shownLink{Tenant: tenant, Link: link, Rebind: rebind, Session: sessionTag(sess)})
	if err := c.s.Store.PutOnce(r.Context(), linkKey(nonce), raw, linkShowTTL); err != nil {
		return ""
	}
	return nonce
}

// shownLinkFor returns the link kept under nonce for this session and
// tenant, and keeps it for another linkShowTTL (a reload shows it again).
func (c *console) shownLinkFor(r *http.Request, sess session, tenant, nonce string) (shownLink, bool) {
	if len(nonce) != 32 {
		return shownLink{}, false
	}
	raw, err := c.s.Store.TakeOnce(r.Context(), linkKey(nonce))
	if err != nil {
		return shownLink{}, false
	}
	var l shownLink
	if json.Unmarshal(raw, &l) != nil {
		return shownLink{}, false
	}
	_ = c.s.Store.PutOnce(r.Context(), linkKey(nonce), raw, linkShowTTL) // put back, whoever asked
	if l.Tenant != tenant || l.Session != sessionTag(sess) {
		return shownLink{}, false
	}
	return l, true
}
