package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// consolePages holds the parsed console templates; safe for concurrent use.
type consolePages struct {
	t   *template.Template
	now func() time.Time
}

func mustParsePages(now func() time.Time) *consolePages {
	p := &consolePages{now: now}
	p.t = template.Must(template.New("console").Funcs(template.FuncMap{
		"when":     p.when,
		"explain":  explain,
		"event":    eventText,
		"account":  account,
		"places":   locations,
		"budget":   budget,
		"others":   otherFields,
		"statusOf": statusText,
		"revEvents": func(h []store.Event) []store.Event {
			out := make([]store.Event, len(h))
			for i, e := range h {
				out[len(h)-1-i] = e
			}
			return out
		},
	}).ParseFS(consoleFiles, "console/templates/*.html"))
	return p
}

// render writes the named page; a template error answers a plain 500.
func (p *consolePages) render(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	if err := p.t.ExecuteTemplate(&buf, name, d); err != nil {
		http.Error(w, "console page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail shows a short problem page.
func (p *consolePages) fail(w http.ResponseWriter, status int, title, msg string) {
	p.render(w, status, "problem", pageData{Title: title, Error: msg})
}

// when formats an admin-view timestamp (*time.Time, time.Time or an RFC
// 3339 string) as UTC with its distance from now; "—" when unknown.
func (p *consolePages) when(v any) string {
	var t time.Time
	switch x := v.(type) {
	case *time.Time:
		if x != nil {
			t = *x
		}
	case time.Time:
		t = x
	case string:
		t, _ = time.Parse(time.RFC3339Nano, x)
	}
	if t.IsZero() {
		return "—"
	}
	d := p.now().Sub(t)
	rel := "from now"
	if d >= 0 {
		rel = "ago"
	} else {
		d = -d
	}
	var amount string
	switch {
	case d < time.Minute:
		amount = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		amount = fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		amount = fmt.Sprintf("%.1f h", d.Hours())
	default:
		amount = fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC") + " (" + amount + " " + rel + ")"
}

func statusText(s store.Status) string {
	switch s {
	case store.StatusActive:
		return "active"
	case store.StatusReauthorizationRequired:
		return "needs re-authorization"
	case store.StatusPending:
		return "awaiting first authorization"
	}
	return string(s)
}

// explanations say what a stored reason means for a support engineer and
// what to do, by the reason's prefix. Unknown reasons are shown as they are.
var explanations = []struct{ prefix, text string }{
	{"refresh token rejected by the provider", "Lightspeed no longer accepts this merchant's authorization: the merchant disconnected the app, an administrator revoked it, or it expired after a long time unused. Send the merchant a new authorization link."},
	{"refresh token consumed by an interrupted refresh", "A token refresh was cut off (lsproxy stopped or the network failed mid-request), and Lightspeed may have used up the one-time refresh token. Try Retry once; if the tenant is flagged again, send the merchant a new authorization link."},
	{"awaiting the merchant's first authorization", "The merchant has not completed the authorization yet. Send (or resend) the authorization link."},
	{"token endpoint circuit breaker open", "After repeated errors lsproxy paused calls to Lightspeed's login service for a few seconds. It retries by itself; nothing to do unless it lasts."},
	{"token endpoint timed out", "Lightspeed's login service did not answer in time. lsproxy retries by itself; nothing to do unless it lasts."},
	{"token endpoint unreachable", "lsproxy could not reach Lightspeed's login service (network or DNS). It retries by itself; check the network if it lasts."},
	{"token endpoint answered 5", "Lightspeed's login service had an internal error. lsproxy retries by itself; nothing to do unless it lasts."},
	{"token endpoint answered 429", "Lightspeed rate-limited token requests. lsproxy retries by itself."},
	{"token endpoint answered", "Lightspeed's login service refused the request. If this repeats, check the OAuth client id and secret."},
	{"held back: many tenants", "Lightspeed rejected several merchants' authorizations within minutes, which usually means a configuration problem (client id or secret) rather than merchants leaving. lsproxy did not flag this tenant; check the OAuth client settings."},
	{"flag reverted", "The flag was lifted again: it was one of many rejections at once (a configuration problem, not the merchant). Nothing to send the merchant."},
	{"the stored grant worked again", "A retry of the stored authorization succeeded; the tenant works again."},
	{"first authorization", "The merchant connected their Lightspeed account."},
	{"re-authorized after", "The merchant connected their account again and the tenant recovered."},
	{"re-authorized while active", "The merchant connected their account again (the tenant was already working)."},
	{"tokens imported", "An operator imported tokens for this tenant."},
}

func explain(reason string) string {
	for _, e := range explanations {
		if strings.HasPrefix(reason, e.prefix) {
			return e.text
		}
	}
	return reason
}

// eventKinds names history event kinds.
var eventKinds = map[string]string{
	store.EventRefreshed:         "Token refreshed",
	store.EventRefreshFailed:     "Refresh failed (will retry)",
	store.EventFlagged:           "Flagged: needs re-authorization",
	store.EventAuthorized:        "Merchant authorized",
	store.EventImported:          "Imported",
	store.EventRetried:           "Recovered by retry",
	store.EventUnflagged:         "Flag reverted",
	store.EventIdentified:        "Merchant account identified",
	store.EventCandidateKept:     "Re-authorized: new grant awaits verification",
	store.EventCandidatePromoted: "New grant verified and in use",
	store.EventCandidateDropped:  "New grant dropped: another merchant account",
	store.EventLinksRevoked:      "Onboarding links revoked",
}

func eventText(kind string) string {
	if t, ok := eventKinds[kind]; ok {
		return t
	}
	return kind
}

// account returns "name (id)" of the view's account field, if any.
func account(raw map[string]any) string {
	a, _ := raw["account"].(map[string]any)
	id, name := fmt.Sprint(a["id"]), fmt.Sprint(a["name"])
	switch {
	case a == nil:
		return ""
	case a["name"] == nil:
		return id
	case a["id"] == nil:
		return name
	}
	return name + " (" + id + ")"
}

// locations lists the view's K-Series locations, if any.
func locations(raw map[string]any) []string {
	ls, _ := raw["locations"].([]any)
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		m, _ := l.(map[string]any)
		if m == nil {
			continue
		}
		s := fmt.Sprint(m["id"])
		if n, ok := m["name"].(string); ok && n != "" {
			s = n + " (" + s + ")"
		}
		out = append(out, s)
	}
	return out
}

// budgetKeys are the view fields that may carry a tenant's rate budget.
var budgetKeys = []string{"rate_limit", "budget", "rate"}

// budget renders the view's rate budget, if any, as "key: value" pairs.
func budget(raw map[string]any) string {
	for _, k := range budgetKeys {
		switch v := raw[k].(type) {
		case nil:
		case map[string]any:
			if words := budgetWords(v); words != "" {
				return words
			}
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, 0, len(keys))
			for _, k := range keys {
				parts = append(parts, k+": "+fmt.Sprint(v[k]))
			}
			return strings.Join(parts, ", ")
		default:
			return fmt.Sprint(v)
		}
	}
	return ""
}

// shownFields are the view fields the tenant page shows in its own places.
var shownFields = map[string]bool{
	"id": true, "status": true, "reason": true, "flagged_at": true, "access_token_expires_at": true,
	"refresh_token_expires_at": true, "last_refresh_at": true, "refresh_count": true, "failure_count": true,
	"history": true, "account": true, "locations": true, "provider": true, "scope": true,
	"created_at": true, "updated_at": true, "has_refresh_token": true, "rate_limit": true, "budget": true, "rate": true,
}

// otherFields returns every other field of the admin view, sorted, so that
// what other parts add to the view is visible without a console change.
func otherFields(raw map[string]any) [][2]string {
	var out [][2]string
	for k, v := range raw {
		if !shownFields[k] {
			out = append(out, [2]string{k, fmt.Sprint(v)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// counts are the live numbers at the top of every page.
type counts struct {
	Active       int  `json:"active"`
	Flagged      int  `json:"flagged"`
	Pending      int  `json:"pending"` // awaiting the first authorization: not flagged
	FailuresHour int  `json:"refresh_failures_last_hour"`
	Total        int  `json:"total"`
	Stale        bool `json:"stale,omitempty"` // the store did not answer; older numbers
	// At is when they were counted.
	At time.Time `json:"at"`
}

// countTTL is how long counted numbers are reused: counting reads every
// tenant record.
const countTTL = 5 * time.Second

// countCache counts tenants by status and refresh failures (from each
// tenant's history) in the last hour, at most once per countTTL. Safe for
// concurrent use; one count runs at a time.
type countCache struct {
	store store.Store
	now   func() time.Time

	mu   sync.Mutex
	last counts
}

func (c *countCache) reset() {
	c.mu.Lock()
	c.last.At = time.Time{}
	c.mu.Unlock()
}

func (c *countCache) get(ctx context.Context) counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.last.At.IsZero() && now.Sub(c.last.At) < countTTL {
		return c.last
	}
	n, err := c.count(ctx, now)
	if err != nil {
		c.last.Stale = true
		return c.last
	}
	c.last = n
	return n
}

func (c *countCache) count(ctx context.Context, now time.Time) (counts, error) {
	ids, err := c.store.List(ctx)
	if err != nil {
		return counts{}, err
	}
	n := counts{At: now}
	since := now.Add(-time.Hour)
	for _, id := range ids {
		t, err := c.store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil && !errors.Is(err, store.ErrDecrypt) {
			return counts{}, err
		}
		n.Total++
		if t == nil {
			continue
		}
		switch t.Status {
		case store.StatusActive:
			n.Active++
		case store.StatusReauthorizationRequired:
			n.Flagged++
		case store.StatusPending:
			n.Pending++
		}
		for _, e := range t.History {
			if (e.Kind == store.EventRefreshFailed || e.Kind == store.EventFlagged) && e.At.After(since) {
				n.FailuresHour += int(max(e.Count, 1))
			}
		}
	}
	return n, nil
}
