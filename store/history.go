package store

import "time"

// MaxHistory bounds Tenant.History: the oldest events are dropped first.
const MaxHistory = 20

// Event kinds recorded in Tenant.History.
const (
	EventRefreshed     = "refreshed"      // a refresh grant succeeded
	EventRefreshFailed = "refresh_failed" // a refresh failed without consuming the grant (endpoint down, timeout)
	EventFlagged       = "flagged"        // the tenant now needs the merchant to re-authorize
	EventAuthorized    = "authorized"     // the merchant completed the OAuth flow
	EventImported      = "imported"       // an operator imported tokens
	EventRetried       = "retried"        // a retry of a flagged tenant's stored grant succeeded
	EventUnflagged     = "unflagged"      // the mass invalid_grant guard reverted a flag
)

// Event is one state change of a tenant, as an operator sees it. It never
// holds a token value: Reason is a fixed text chosen by the writer.
//
// Consecutive events of the same kind and reason are merged: Count says how
// many, Since when the first of them happened and At when the last did.
type Event struct {
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Reason string    `json:"reason,omitempty"`
	Count  int64     `json:"count,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Record appends an event to t.History, merging it into the last one when
// kind and reason repeat, and keeps at most MaxHistory events. It never
// modifies the backing array of the slice it found (a clone may share it).
func (t *Tenant) Record(at time.Time, kind, reason string) {
	n := len(t.History)
	h := make([]Event, n, min(n+1, MaxHistory+1))
	copy(h, t.History)
	if n > 0 && h[n-1].Kind == kind && h[n-1].Reason == reason {
		last := &h[n-1]
		if last.Since.IsZero() {
			last.Since = last.At
		}
		last.Count = max(last.Count, 1) + 1
		last.At = at
		t.History = h
		return
	}
	h = append(h, Event{At: at, Kind: kind, Reason: reason})
	if len(h) > MaxHistory {
		h = h[len(h)-MaxHistory:]
	}
	t.History = h
}

// authorizedReason says what an authorization ends, from the record
// before it (fixed words, never a value).
func (t *Tenant) authorizedReason() string {
	switch {
	case t.AuthorizedAt.IsZero() && t.RefreshToken == "":
		return "first authorization"
	case t.Status != StatusActive:
		return "re-authorized after: " + t.Reason
	}
	return "re-authorized while active"
}
