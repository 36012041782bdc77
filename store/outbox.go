package store

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Outbox is a durable queue of webhook events in the store, shared by
// every replica: an event written once is delivered by whichever replica
// claims it, even if the one that wrote it dies. Both backends implement
// it (the conformance suite checks one contract).
//
// Order: events of one tenant (OutboxEvent.Tenant, "" being one more
// group) are claimed one at a time in the order they were added; an event
// is claimable only when every earlier event of its tenant was delivered
// or buried. Events of different tenants are independent.
//
// Claims are leases: OutboxClaim hands an event out with a fresh Claim
// token until now+lease; past that any caller may claim it again (a
// deliverer that died is replaced without help). OutboxDone, OutboxRetry
// and OutboxBury succeed only for the current claim token and otherwise
// return ErrLockLost (the lease passed and someone else holds the event),
// changing nothing.
//
// Times are the caller's clock (Unix milliseconds at rest), so replicas'
// clocks should agree to well under the lease.
//
// Methods are safe for concurrent use, from any number of processes
// sharing the store.
type Outbox interface {
	// OutboxAdd appends ev (ID, Type and Payload required; CreatedAt zero =
	// now) to its tenant's queue, due at once. Adding an id still queued or
	// dead again changes nothing and returns nil (a retried add is safe).
	OutboxAdd(ctx context.Context, ev OutboxEvent) error
	// OutboxClaim leases up to max due events (NextAt <= now, the first
	// undelivered event of their tenant, not leased) until now+lease and
	// returns them with their Claim token set.
	OutboxClaim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]OutboxEvent, error)
	// OutboxDone removes the delivered event ev (claimed by the caller) and
	// makes its tenant's next event due.
	OutboxDone(ctx context.Context, ev OutboxEvent) error
	// OutboxRetry records a failed attempt of ev: Attempts+1, LastError,
	// due again at next, lease released.
	OutboxRetry(ctx context.Context, ev OutboxEvent, next time.Time, lastErr string) error
	// OutboxBury moves ev to the dead letters (Attempts+1, LastError,
	// DeadAt = at) and makes its tenant's next event due.
	OutboxBury(ctx context.Context, ev OutboxEvent, at time.Time, lastErr string) error
	// OutboxList returns up to limit events: the dead letters (dead true,
	// most recently buried first) or the queued events (oldest first).
	OutboxList(ctx context.Context, dead bool, limit int) ([]OutboxEvent, error)
	// OutboxRedeliver makes event id due at now: a dead letter goes back to
	// the end of its tenant's queue with Attempts 0; a queued event waiting
	// for its next attempt is due at once. id "" does that for every dead
	// letter and every queued event. It returns how many events it moved;
	// ErrNotFound when id is neither queued nor dead.
	OutboxRedeliver(ctx context.Context, id string, now time.Time) (int, error)
	// OutboxStats counts queued and dead events and finds the oldest queued
	// one.
	OutboxStats(ctx context.Context) (OutboxStats, error)
	// OutboxRecent returns up to limit (at most OutboxRecentMax) of the
	// tenant's last outcomes, newest first: events delivered (DeliveredAt
	// set) or buried (DeadAt set), without their payload. A best-effort
	// record for operators, written by OutboxDone and OutboxBury.
	OutboxRecent(ctx context.Context, tenant string, limit int) ([]OutboxEvent, error)
}

// OutboxRecentMax is how many outcomes OutboxRecent keeps per tenant.
const OutboxRecentMax = 20

var (
	_ Outbox = (*Bolt)(nil)
	_ Outbox = (*Redis)(nil)
)

// OutboxEvent is one webhook event in the outbox.
type OutboxEvent struct {
	ID        string    // unique; sent as webhook-id
	Tenant    string    // ordering group; "" for events about no tenant
	Type      string    // e.g. "tenant.flagged"
	Payload   []byte    // the request body, signed per attempt
	CreatedAt time.Time // when it was added
	Attempts  int       // failed attempts so far
	NextAt    time.Time // when it is due (queued events)
	LastError string    // why the last attempt failed; "" none yet
	DeadAt    time.Time // when it was buried; zero while queued
	// DeliveredAt is when it was delivered (OutboxRecent only).
	DeliveredAt time.Time
	// Claim is the lease token of a claimed event (set by OutboxClaim);
	// "" otherwise.
	Claim string
}

// OutboxStats summarises the outbox.
type OutboxStats struct {
	Queued int64     // events not yet delivered or buried
	Dead   int64     // dead letters
	Oldest time.Time // CreatedAt of the oldest queued event; zero when none
}

// ErrOutboxInvalid: an event without id, type or payload, or an id or
// tenant with a NUL byte or too long.
var ErrOutboxInvalid = errors.New("store: invalid outbox event")

// OutboxMaxPayload bounds an event's payload.
const OutboxMaxPayload = 64 << 10

func validOutboxEvent(ev OutboxEvent) error {
	switch {
	case ev.ID == "" || len(ev.ID) > 128 || hasNUL(ev.ID):
		return fmt.Errorf("%w: id", ErrOutboxInvalid)
	case len(ev.Tenant) > 128 || hasNUL(ev.Tenant):
		return fmt.Errorf("%w: tenant", ErrOutboxInvalid)
	case ev.Type == "" || len(ev.Type) > 128:
		return fmt.Errorf("%w: type", ErrOutboxInvalid)
	case len(ev.Payload) == 0 || len(ev.Payload) > OutboxMaxPayload:
		return fmt.Errorf("%w: payload", ErrOutboxInvalid)
	}
	return nil
}

func hasNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func validClaim(ev OutboxEvent) error {
	if ev.ID == "" || ev.Claim == "" {
		return fmt.Errorf("%w: event %q not claimed", ErrLockLost, ev.ID)
	}
	return nil
}

// newClaimToken returns 16 random bytes in hex.
func newClaimToken() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recentEntry is one OutboxRecent record at rest (both backends).
type recentEntry struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Created   int64  `json:"created"`
	Attempts  int    `json:"attempts"`
	Delivered int64  `json:"delivered,omitempty"`
	Dead      int64  `json:"dead,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// newRecentEntry records ev's outcome at: delivered (after ev.Attempts
// failures) or buried (dead, with lastErr).
func newRecentEntry(ev OutboxEvent, at time.Time, dead bool, lastErr string) []byte {
	e := recentEntry{ID: ev.ID, Type: ev.Type, Created: ev.CreatedAt.UnixMilli(), Attempts: ev.Attempts + 1}
	if dead {
		e.Dead, e.LastError = max(at.UnixMilli(), 1), lastErr
	} else {
		e.Delivered = max(at.UnixMilli(), 1)
	}
	b, _ := json.Marshal(e)
	return b
}

func parseRecent(tenant string, raw []byte) (OutboxEvent, bool) {
	var e recentEntry
	if json.Unmarshal(raw, &e) != nil || e.ID == "" {
		return OutboxEvent{}, false
	}
	return OutboxEvent{ID: e.ID, Tenant: tenant, Type: e.Type, CreatedAt: fromMillis(e.Created), Attempts: e.Attempts,
		DeliveredAt: fromMillis(e.Delivered), DeadAt: fromMillis(e.Dead), LastError: e.LastError}, true
}

func fromMillis(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
