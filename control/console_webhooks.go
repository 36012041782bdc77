package control

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/lsproxy/lsproxy/store"
)

// The console's webhook page (/console/webhooks): dead letters, failed and
// queued events of the outbox, redelivered one or all; and the webhook
// section of a tenant's page. It acts through the admin API
// (GET /admin/webhooks/events, POST .../redeliver).

func init() {
	doneText["redelivered"] = "The event was queued for delivery again."
	doneText["redelivered-all"] = "Every dead and failed event was queued for delivery again."
	doneText["redelivered-none"] = "Nothing was moved: the event is being delivered, or waits behind an earlier event of its tenant."
}

func (c *console) mountWebhooks(cm *http.ServeMux) {
	cm.HandleFunc("GET /console/webhooks", c.view(c.webhooks))
	cm.HandleFunc("POST /console/webhooks/redeliver", c.action("webhook_redeliver_all", c.redeliverAll))
	cm.HandleFunc("POST /console/webhooks/events/{event}/redeliver", c.action("webhook_redeliver", c.redeliverOne))
}

// webhooksBody is the webhooks page.
type webhooksBody struct {
	State  string
	States []struct{ Key, Label string }
	View   WebhookEventsView
	Table  hookTable
	Counts counts
}

// hookTable is one table of events with what its redeliver forms need.
type hookTable struct {
	Rows                []hookRow
	CSRF, State, Tenant string // Tenant: the redeliver returns to its page
}

// webhookStates are the page's tabs, in order.
var webhookStates = []struct{ Key, Label string }{
	{"dead", "Dead letters"}, {"failed", "Failing"}, {"queued", "All queued"},
}

func (c *console) webhooks(w http.ResponseWriter, r *http.Request, sess session) {
	state := r.URL.Query().Get("state")
	if state != "failed" && state != "queued" {
		state = "dead"
	}
	res := c.callAdmin(r.Context(), http.MethodGet, "/admin/webhooks/events?state="+state+"&limit=200", nil)
	var v WebhookEventsView
	if res.Status != http.StatusOK || json.Unmarshal(res.Body, &v) != nil {
		c.pages.fail(w, http.StatusServiceUnavailable, "Store unavailable", "The webhook outbox could not be read. Try again in a moment.")
		return
	}
	c.pages.render(w, http.StatusOK, "webhooks", c.data(r, sess, "Webhooks", webhooksBody{State: state, States: webhookStates, View: v, Counts: c.counts.get(r.Context()),
		Table: hookTable{Rows: c.hookRows(v.Events), CSRF: c.sessions.csrf(sess), State: state}}))
}

// backTo is where a redelivery returns to: the page it came from (the
// webhooks page with its tab, or a tenant's page), never another site.
func backTo(r *http.Request) string {
	if t := r.PostForm.Get("tenant"); t != "" && store.ValidTenantID(t) {
		return "/console/tenants/" + url.PathEscape(t)
	}
	state := r.PostForm.Get("state")
	if state != "failed" && state != "queued" {
		state = "dead"
	}
	return "/console/webhooks?state=" + state
}

func withDone(path, done string) string {
	if u, err := url.Parse(path); err == nil {
		q := u.Query()
		q.Set("done", done)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return path
}

func (c *console) redeliverOne(w http.ResponseWriter, r *http.Request, _ session) int {
	id := r.PathValue("event")
	if !validEventID(id) {
		c.pages.fail(w, http.StatusBadRequest, "Invalid event id", "This is not a webhook event id.")
		return http.StatusBadRequest
	}
	res := c.callAdmin(r.Context(), http.MethodPost, "/admin/webhooks/events/"+url.PathEscape(id)+"/redeliver", nil)
	if res.Status != http.StatusOK {
		c.pages.fail(w, res.Status, "Not redelivered", "The event was not redelivered: "+res.message())
		return res.Status
	}
	done := "redelivered"
	if n, _ := res.obj()["redelivered"].(float64); n == 0 {
		done = "redelivered-none"
	}
	http.Redirect(w, r, withDone(backTo(r), done), http.StatusSeeOther)
	return res.Status
}

func (c *console) redeliverAll(w http.ResponseWriter, r *http.Request, _ session) int {
	res := c.callAdmin(r.Context(), http.MethodPost, "/admin/webhooks/redeliver", nil)
	if res.Status != http.StatusOK {
		c.pages.fail(w, res.Status, "Not redelivered", "Nothing was redelivered: "+res.message())
		return res.Status
	}
	http.Redirect(w, r, withDone(backTo(r), "redelivered-all"), http.StatusSeeOther)
	return res.Status
}

// tenantWebhooks is the webhook section of a tenant's page: its queued
// and dead events and its last outcomes.
type tenantWebhooks struct {
	Pending hookTable // queued (including failing) and dead
	Recent  hookTable // delivered or buried, newest first
	Failed  bool      // the outbox could not be read
}

func (c *console) tenantWebhooks(r *http.Request, tenant, csrf string) tenantWebhooks {
	tw := tenantWebhooks{Pending: hookTable{CSRF: csrf, State: "queued", Tenant: tenant}, Recent: hookTable{Tenant: tenant}}
	for _, state := range []string{"queued", "dead", "recent"} {
		res := c.callAdmin(r.Context(), http.MethodGet, "/admin/webhooks/events?state="+state+"&limit=20&tenant="+url.QueryEscape(tenant), nil)
		var v WebhookEventsView
		if res.Status != http.StatusOK || json.Unmarshal(res.Body, &v) != nil {
			tw.Failed = true
			return tw
		}
		if state == "recent" {
			tw.Recent.Rows = c.hookRows(v.Events)
		} else {
			tw.Pending.Rows = append(tw.Pending.Rows, c.hookRows(v.Events)...)
		}
	}
	return tw
}

// hookRow is an event as the console shows it, its words computed here
// (the templates' shared function map stays as it is).
type hookRow struct {
	V                     WebhookEventView
	When, State, Attempts string
	Redeliverable         bool // dead, or failing and waiting for its next attempt
}

func (c *console) hookRows(evs []WebhookEventView) []hookRow {
	out := make([]hookRow, 0, len(evs))
	for _, e := range evs {
		h := hookRow{V: e, Attempts: strconv.Itoa(e.Attempts) + " failed attempts"}
		if e.Attempts == 1 {
			h.Attempts = "1 failed attempt"
		}
		switch {
		case e.DeliveredAt != nil:
			h.When, h.State = "delivered "+c.pages.when(e.DeliveredAt), "delivered"
			h.Attempts = strconv.Itoa(e.Attempts) + " attempts"
			if e.Attempts == 1 {
				h.Attempts = "first attempt"
			}
		case e.DeadAt != nil:
			h.When, h.State, h.Redeliverable = "gave up "+c.pages.when(e.DeadAt), "dead letter", e.State == "dead"
		case e.NextAttemptAt != nil:
			h.When, h.State, h.Redeliverable = "next attempt "+c.pages.when(e.NextAttemptAt), "failing, retried", true
		default:
			h.When, h.State = "queued "+c.pages.when(e.CreatedAt), "waiting to be sent"
		}
		out = append(out, h)
	}
	return out
}
