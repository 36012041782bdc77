package control

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// WebhookEventView is a webhook event in the outbox as the admin API shows
// it (the payload is left out: GET it from the receiver's side).
type WebhookEventView struct {
	ID            string     `json:"id"`
	Tenant        string     `json:"tenant,omitempty"`
	Type          string     `json:"type"`
	State         string     `json:"state"` // queued, failed (queued, an attempt failed), dead or delivered (state=recent)
	CreatedAt     time.Time  `json:"created_at"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	DeadAt        *time.Time `json:"dead_at,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
}

// WebhookEventsView is GET /admin/webhooks/events.
type WebhookEventsView struct {
	Events []WebhookEventView `json:"events"`
	// Queued and Dead count the whole outbox; OldestQueuedAt is the
	// oldest undelivered event's creation time.
	Queued         int64      `json:"queued"`
	Dead           int64      `json:"dead"`
	OldestQueuedAt *time.Time `json:"oldest_queued_at,omitempty"`
}

// WebhookEventViewOf renders ev.
func WebhookEventViewOf(ev store.OutboxEvent) WebhookEventView {
	v := WebhookEventView{ID: ev.ID, Tenant: ev.Tenant, Type: ev.Type, State: "queued", CreatedAt: ev.CreatedAt.UTC(),
		Attempts: ev.Attempts, LastError: ev.LastError, DeadAt: ts(ev.DeadAt), DeliveredAt: ts(ev.DeliveredAt)}
	switch {
	case !ev.DeliveredAt.IsZero():
		v.State = "delivered"
	case !ev.DeadAt.IsZero():
		v.State = "dead"
	case ev.Attempts > 0:
		v.State = "failed"
		v.NextAttemptAt = ts(ev.NextAt)
	}
	return v
}

// maxWebhookList bounds GET /admin/webhooks/events.
const maxWebhookList = 1000

func init() {
	adminActions["GET /admin/webhooks/events"] = "webhook_events"
	adminActions["POST /admin/webhooks/events/{id}/redeliver"] = "webhook_redeliver"
	adminActions["POST /admin/webhooks/redeliver"] = "webhook_redeliver_all"
}

func (s *Server) mountWebhooks(admin *http.ServeMux) {
	admin.HandleFunc("GET /admin/webhooks/events", s.webhookEvents)
	admin.HandleFunc("POST /admin/webhooks/events/{id}/redeliver", s.webhookRedeliver)
	admin.HandleFunc("POST /admin/webhooks/redeliver", s.webhookRedeliver)
}

// outbox is the store's outbox, or nil.
func (s *Server) outbox() store.Outbox {
	ob, _ := s.Store.(store.Outbox)
	return ob
}

// WebhookEvents lists the outbox: state "dead" (default), "failed"
// (queued events whose last attempt failed), "queued", or "recent" (the
// tenant's last outcomes: delivered or buried; tenant required); tenant,
// when set, keeps that tenant's events only.
func (s *Server) WebhookEvents(r *http.Request, state, tenant string, limit int) (WebhookEventsView, error) {
	out := WebhookEventsView{Events: []WebhookEventView{}}
	ob := s.outbox()
	if ob == nil {
		return out, nil
	}
	st, err := ob.OutboxStats(r.Context())
	if err != nil {
		return out, err
	}
	out.Queued, out.Dead, out.OldestQueuedAt = st.Queued, st.Dead, ts(st.Oldest)
	if state == "recent" {
		evs, err := ob.OutboxRecent(r.Context(), tenant, min(limit, store.OutboxRecentMax))
		if err != nil {
			return out, err
		}
		for _, ev := range evs {
			out.Events = append(out.Events, WebhookEventViewOf(ev))
		}
		return out, nil
	}
	// A filter reads more than limit events to find limit matches.
	read := limit
	if state == "failed" || tenant != "" {
		read = maxWebhookList * 2
	}
	evs, err := ob.OutboxList(r.Context(), state == "dead", read)
	if err != nil {
		return out, err
	}
	for _, ev := range evs {
		if (state == "failed" && ev.Attempts == 0) || (tenant != "" && ev.Tenant != tenant) {
			continue
		}
		if len(out.Events) == limit {
			break
		}
		out.Events = append(out.Events, WebhookEventViewOf(ev))
	}
	return out, nil
}

func (s *Server) webhookEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = "dead"
	}
	if state != "dead" && state != "failed" && state != "queued" && state != "recent" {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "state must be dead, failed, queued or recent"})
		return
	}
	tenant := q.Get("tenant")
	if tenant != "" && !store.ValidTenantID(tenant) {
		httperr.Write(w, httperr.Error{Kind: httperr.InvalidTenant})
		return
	}
	if state == "recent" && tenant == "" {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "state=recent needs a tenant"})
		return
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxWebhookList {
			httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "limit must be 1 to 1000"})
			return
		}
		limit = n
	}
	v, err := s.WebhookEvents(r, state, tenant, limit)
	if err != nil {
		adminError(w, "", err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, v)
}

// validEventID: what Notify makes ("evt_" + hex) and anything similar.
func validEventID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' || r == ':')
	}) < 0
}

// Redeliver makes event id (or, for "", every dead and failed event) due
// now; it returns how many events it moved.
func (s *Server) Redeliver(r *http.Request, id string) (int, error) {
	ob := s.outbox()
	if ob == nil {
		if id == "" {
			return 0, nil
		}
		return 0, store.ErrNotFound
	}
	return ob.OutboxRedeliver(r.Context(), id, s.Now())
}

func (s *Server) webhookRedeliver(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if strings.HasPrefix(r.URL.Path, "/admin/webhooks/events/") && !validEventID(id) {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "the event id is malformed"})
		return
	}
	n, err := s.Redeliver(r, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		httperr.Write(w, httperr.Error{Kind: httperr.UnknownEvent})
		return
	case err != nil:
		adminError(w, "", err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, map[string]int{"redelivered": n})
}
