package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Implementations wrap them; test with errors.Is.
var (
	// ErrNotFound: no record (or no one-time value) under that key.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a compare-and-set found another version than expected.
	ErrConflict = errors.New("store: version conflict")
	// ErrLockHeld: another owner holds the lock.
	ErrLockHeld = errors.New("store: lock held by another owner")
	// ErrLockLost: the lock expired or was taken over before release/renewal.
	ErrLockLost = errors.New("store: lock not held")
	// ErrDecrypt: no configured key opens a sealed token.
	ErrDecrypt = errors.New("store: cannot decrypt record (wrong or missing encryption key)")
	// ErrLocked: the embedded store's file is in use by another process.
	ErrLocked = errors.New("store: data file is locked by another process")
)

// Status of a tenant.
type Status string

const (
	StatusActive                  Status = "active"
	StatusReauthorizationRequired Status = "reauthorization_required"
	// StatusPending: created for onboarding (an authorize link), awaiting
	// the merchant's first authorization. Not flagged: nothing went wrong.
	StatusPending Status = "pending"
)

// Statuses lists every status, in the order surfaces show them.
var Statuses = []Status{StatusActive, StatusPending, StatusReauthorizationRequired}

// ValidStatus reports whether s is one of Statuses.
func ValidStatus(s Status) bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Tenant is one merchant's stored state. Tokens are plaintext in memory and
// sealed at rest by the store.
type Tenant struct {
	ID       string `json:"id"`
	Provider string `json:"provider,omitempty"`

	AccessToken      string    `json:"-"`
	AccessExpiresAt  time.Time `json:"access_expires_at"`
	RefreshToken     string    `json:"-"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at"` // zero: the provider did not say
	Scope            string    `json:"scope,omitempty"`

	Status    Status    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	FlaggedAt time.Time `json:"flagged_at"`

	// RefreshInFlight is set just before a refresh grant is sent and cleared
	// when its result is written. A record found with it set means an earlier
	// refresh may have consumed the stored refresh token without its answer
	// being recorded (process killed, response lost).
	RefreshInFlight bool `json:"refresh_in_flight,omitempty"`
	// RefreshStartedAt is when the in-flight refresh was marked.
	RefreshStartedAt time.Time `json:"refresh_started_at"`
	// RefreshMark identifies the holder's in-flight mark: the holder keeps
	// trying to write its result for as long as the record carries it.
	RefreshMark string `json:"refresh_mark,omitempty"`
	// RefreshLease is the holder's lock TTL and RefreshGrace the time a
	// successor must see the store answer with the mark unchanged before it
	// takes over (longer than the holder's write-retry interval). They are
	// stored so that successors judge a mark by its holder's settings, not
	// their own (a rolling configuration change cannot break takeover).
	RefreshLease time.Duration `json:"refresh_lease,omitempty"`
	RefreshGrace time.Duration `json:"refresh_grace,omitempty"`

	// Extra holds provider quirks, e.g. x-series "domain_prefix".
	Extra map[string]string `json:"extra,omitempty"`

	// Account is the merchant account the grant belongs to, as the
	// provider said after the code exchange (not secret); nil = not
	// identified (imported, or a preset without an identity lookup).
	Account *Account `json:"account,omitempty"`
	// Locations are the K-Series business locations the grant reaches,
	// re-read when the grant is refreshed; LocationsAt is when.
	Locations   []Location `json:"locations,omitempty"`
	LocationsAt time.Time  `json:"locations_at"`
	// Identify is the state of an identification that could not be
	// completed at the callback and is retried in the background; nil =
	// none pending (see identify.go).
	Identify *IdentifyState `json:"identify,omitempty"`
	// Candidate is a re-authorization's grant kept, unserved, beside the
	// served one until identification shows it belongs to the tenant's
	// account; nil = none. Its tokens are sealed like the tenant's.
	Candidate *Candidate `json:"candidate,omitempty"`
	// LinkGeneration is the tenant's authorize-link generation: links
	// carry the generation they were made under and work only while it is
	// the record's (RevokeLinks increments it).
	LinkGeneration int64 `json:"link_generation,omitempty"`

	// AuthorizedAt is when the merchant last completed the OAuth flow.
	AuthorizedAt  time.Time `json:"authorized_at"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastRefreshAt time.Time `json:"last_refresh_at"`
	RefreshCount  int64     `json:"refresh_count"`
	FailureCount  int64     `json:"failure_count"`

	// History is the tenant's last MaxHistory state changes, oldest first;
	// see Record.
	History []Event `json:"history,omitempty"`

	// Version is assigned by the store: 1 on creation, +1 on every write.
	// With WriteID it is the fencing value for compare-and-set.
	Version int64 `json:"-"`
	// WriteID is the random id of the write that produced this record,
	// assigned by the store (Get and a successful Put set it). A version
	// number can repeat after a failover lost writes; the write id does not
	// (SPEC §3 rule 12).
	WriteID string `json:"-"`
}

// Account is a merchant account at the provider.
type Account struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Location is a K-Series business location a grant reaches.
type Location struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	BusinessID string `json:"business_id"`
}

// Clone returns a deep copy.
func (t *Tenant) Clone() *Tenant {
	c := *t
	if t.Account != nil {
		a := *t.Account
		c.Account = &a
	}
	c.Locations = append([]Location(nil), t.Locations...)
	if t.Extra != nil {
		c.Extra = make(map[string]string, len(t.Extra))
		for k, v := range t.Extra {
			c.Extra[k] = v
		}
	}
	if t.History != nil {
		c.History = append([]Event(nil), t.History...)
	}
	if t.Identify != nil {
		i := *t.Identify
		c.Identify = &i
	}
	if t.Candidate != nil {
		c.Candidate = t.Candidate.clone()
	}
	return &c
}

// Store is the persistence contract. All methods must be safe for concurrent
// use by multiple goroutines.
type Store interface {
	// Get returns the tenant or ErrNotFound (ErrDecrypt if its tokens cannot
	// be opened).
	Get(ctx context.Context, id string) (*Tenant, error)

	// List returns the ids of all tenants, sorted.
	List(ctx context.Context) ([]string, error)

	// Put writes t if the stored version equals expect (0 = must not exist)
	// and, when t.WriteID is not empty, the stored write id equals t.WriteID
	// (the record t was derived from: a repeated version number cannot let
	// a stale write win). It returns the new version (expect+1) and sets
	// t.Version and t.WriteID to the new values; ErrConflict when the stored
	// fencing value differs (t is then unchanged). t.Version is not read. A
	// successful Put notifies subscribers.
	Put(ctx context.Context, t *Tenant, expect int64) (int64, error)

	// Delete removes the tenant; deleting a missing tenant returns
	// ErrNotFound. A successful Delete notifies subscribers.
	Delete(ctx context.Context, id string) error

	// TryLock takes the named lock for ttl without waiting, or returns
	// ErrLockHeld.
	TryLock(ctx context.Context, name string, ttl time.Duration) (Lock, error)

	// PeekLock reports whether the named lock is held by anyone, without
	// taking it.
	PeekLock(ctx context.Context, name string) (bool, error)

	// PutOnce stores a one-time value that expires after ttl. It returns
	// ErrConflict if the key already exists.
	PutOnce(ctx context.Context, key string, value []byte, ttl time.Duration) error

	// TakeOnce atomically reads and deletes a one-time value; ErrNotFound if
	// it is missing, expired or already taken.
	TakeOnce(ctx context.Context, key string) ([]byte, error)

	// Subscribe delivers the id of every tenant that is written or deleted,
	// by any process sharing the store, until ctx is done; the channel is
	// then closed. Delivery is best effort (a slow reader may miss ids);
	// callers keep a bounded cache lifetime as a fallback. An empty id
	// means ids may have been lost since the last one (a slow reader, a
	// reconnect): treat every tenant as changed.
	Subscribe(ctx context.Context) (<-chan string, error)

	// Ping reports whether the backend answers.
	Ping(ctx context.Context) error

	// Close releases the backend.
	Close() error
}

// NotifyLosses is implemented by stores whose change notifications can be
// lost without a subscriber seeing a gap: a writer's publish that failed
// (Redis). A store that does not implement it reports every loss to its
// subscribers as an empty id (Subscribe). Safe for concurrent use.
type NotifyLosses interface {
	// LostNotifications returns a counter, shared by every process on the
	// store, that grows whenever a change notification was lost. A
	// subscriber that sees it grow treats every tenant as changed.
	LostNotifications(ctx context.Context) (uint64, error)
}

var _ NotifyLosses = (*Bolt)(nil)

// Lock is a held lock. Methods must be safe for concurrent use.
type Lock interface {
	// Refresh extends the lock to ttl from now; ErrLockLost if not held.
	Refresh(ctx context.Context, ttl time.Duration) error
	// Release frees the lock if still held by this owner; ErrLockLost if it
	// had expired or been taken over.
	Release(ctx context.Context) error
}

// AckedLock is implemented by locks whose store may have replicas (Redis).
// RefreshAcked is Refresh that returns only once the extension is
// acknowledged by the replicas PutAcked waits for (SPEC §3 rules 14, 17),
// so a failover cannot bring back the lock with an earlier expiry; with no
// replicas to wait for it is Refresh. Safe for concurrent use.
//
// Errors: as for Refresh; an error wrapping ErrNotAcked when the extension
// was applied but not acknowledged before ctx ended or the wait bound.
type AckedLock interface {
	Lock
	RefreshAcked(ctx context.Context, ttl time.Duration) error
}

// ValidTenantID reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$,
// the tenant id syntax of every surface (proxy header, admin API, links).
func ValidTenantID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-')) {
			return false
		}
	}
	return true
}
