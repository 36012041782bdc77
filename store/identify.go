package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"
)

// Identification that keeps grants (SPEC §8, amended 2026-12-07): a grant
// is discarded only when identification positively shows another account
// than the tenant's. When the provider's identity endpoint cannot be
// asked at the callback, the record says so (Identify) and a background
// retry finishes the job; a re-authorization of a tenant whose account is
// known keeps the new grant beside the served one (Candidate) until then.

// ReasonAwaitingFirstAuthorization is the Reason of a placeholder record
// created by an authorize link before the tenant's first authorization.
const ReasonAwaitingFirstAuthorization = "awaiting the merchant's first authorization"

// IdentifyPending is IdentifyState.State while an identification is
// retried.
const IdentifyPending = "pending"

// IdentifyState is a background identification in progress.
type IdentifyState struct {
	State     string    `json:"state"`                // IdentifyPending
	LastError string    `json:"last_error,omitempty"` // the last attempt's failure (no token, no body)
	NextAt    time.Time `json:"next_at"`              // when the next attempt is due
	Since     time.Time `json:"since"`                // when identification first failed
	Attempts  int       `json:"attempts"`             // attempts made since
}

// Candidate is a re-authorization's grant that is stored but not served
// until identification shows it belongs to the tenant's account (or an
// operator accepts it). Its tokens are sealed at rest like the tenant's.
type Candidate struct {
	AccessToken      string            `json:"-"`
	RefreshToken     string            `json:"-"`
	AccessExpiresAt  time.Time         `json:"access_expires_at"`
	RefreshExpiresAt time.Time         `json:"refresh_expires_at"`
	Scope            string            `json:"scope,omitempty"`
	Extra            map[string]string `json:"extra,omitempty"` // callback parameters (x-series domain_prefix)
	ReceivedAt       time.Time         `json:"received_at"`
}

func (c *Candidate) clone() *Candidate {
	d := *c
	if c.Extra != nil {
		d.Extra = make(map[string]string, len(c.Extra))
		for k, v := range c.Extra {
			d.Extra[k] = v
		}
	}
	return &d
}

// Event kinds of identification and candidates.
const (
	EventIdentified        = "identified"         // the background identification learnt the account
	EventCandidateKept     = "candidate_kept"     // a re-authorization's grant awaits identification
	EventCandidatePromoted = "candidate_promoted" // the candidate grant is served now
	EventCandidateDropped  = "candidate_dropped"  // the candidate grant belonged to another account
	EventLinksRevoked      = "links_revoked"      // every authorize link issued so far stopped working
)

// IdentifyLister lists the tenants with a background identification
// pending without reading every record. Redis implements it; callers fall
// back to List and Get for a Store that does not. Safe for concurrent use.
type IdentifyLister interface {
	// ListIdentifyPending returns those ids (it may return ids whose
	// identification has finished meanwhile: callers check the record).
	ListIdentifyPending(ctx context.Context) ([]string, error)
}

// ErrNoCandidate: the tenant has no candidate grant.
var ErrNoCandidate = errors.New("store: the tenant has no candidate grant")

// Pending reports whether t awaits its first authorization.
func (t *Tenant) Pending() bool { return t.Status == StatusPending }

// normalize reads a placeholder written by an earlier version (flagged
// with ReasonAwaitingFirstAuthorization, never authorized, no grant) as
// pending.
func (t *Tenant) normalize() {
	if t.Status == StatusReauthorizationRequired && t.Reason == ReasonAwaitingFirstAuthorization &&
		t.AuthorizedAt.IsZero() && t.RefreshToken == "" && t.AccessToken == "" {
		t.Status = StatusPending
		t.FlaggedAt = time.Time{}
	}
}

// StartIdentify records that identification of the served grant (or of
// the candidate) failed and is retried at next.
func (t *Tenant) StartIdentify(lastErr string, next, now time.Time) {
	t.Identify = &IdentifyState{State: IdentifyPending, LastError: lastErr, NextAt: next, Since: now, Attempts: 1}
	t.UpdatedAt = now
}

// IdentifyFailed records one more failed attempt, the next at next.
func (t *Tenant) IdentifyFailed(lastErr string, next, now time.Time) {
	if t.Identify == nil {
		t.StartIdentify(lastErr, next, now)
		return
	}
	t.Identify.LastError = lastErr
	t.Identify.NextAt = next
	t.Identify.Attempts++
	t.UpdatedAt = now
}

// Identified stores the account (and locations) the served grant belongs
// to and ends a pending identification.
func (t *Tenant) Identified(a Account, locs []Location, now time.Time) {
	t.Account = &a
	t.Locations = append([]Location(nil), locs...)
	t.LocationsAt = now
	if t.Identify != nil {
		t.Identify = nil
		t.Record(now, EventIdentified, "merchant account identified in the background")
	}
	t.UpdatedAt = now
}

// KeepCandidate stores a re-authorization's grant beside the served one;
// identification of it is retried at next. A previous candidate is
// replaced (the newer consent wins).
func (t *Tenant) KeepCandidate(g Tokens, extra map[string]string, lastErr string, next, now time.Time) {
	t.Candidate = &Candidate{
		AccessToken: g.Access, RefreshToken: g.Refresh, AccessExpiresAt: g.AccessExpiry,
		RefreshExpiresAt: g.RefreshExpiry, Scope: g.Scope, Extra: extra, ReceivedAt: now,
	}
	t.StartIdentify(lastErr, next, now)
	t.Record(now, EventCandidateKept, "re-authorized; the new grant is served once the merchant account is verified")
}

// PromoteCandidate makes the candidate the served grant (an authorization:
// tokens replaced, flag and counters cleared) and ends identification.
// ident, when not nil, is the account the candidate was identified as.
// ErrNoCandidate when there is none.
func (t *Tenant) PromoteCandidate(ident *Account, locs []Location, why string, now time.Time) error {
	c := t.Candidate
	if c == nil {
		return ErrNoCandidate
	}
	t.Record(now, EventCandidatePromoted, why)
	for k, v := range c.Extra {
		if t.Extra == nil {
			t.Extra = map[string]string{}
		}
		t.Extra[k] = v
	}
	t.Authorize(Tokens{Access: c.AccessToken, AccessExpiry: c.AccessExpiresAt, Refresh: c.RefreshToken, RefreshExpiry: c.RefreshExpiresAt, Scope: c.Scope}, c.ReceivedAt)
	t.UpdatedAt = now
	if ident != nil {
		a := *ident
		t.Account = &a
		t.Locations = append([]Location(nil), locs...)
		t.LocationsAt = now
	}
	t.Candidate = nil
	t.Identify = nil
	return nil
}

// DropCandidate discards the candidate (it belongs to another account) and
// ends identification; the served grant stays.
func (t *Tenant) DropCandidate(why string, now time.Time) {
	t.Candidate = nil
	t.Identify = nil
	t.UpdatedAt = now
	t.Record(now, EventCandidateDropped, why)
}

// RevokeLinks stops every authorize link issued so far for t.
func (t *Tenant) RevokeLinks(now time.Time) {
	t.LinkGeneration++
	t.UpdatedAt = now
	t.Record(now, EventLinksRevoked, "every onboarding link issued so far was revoked")
}

// NewLinkGeneration returns a random positive 62-bit link generation.
func NewLinkGeneration() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported platforms
	return int64(binary.BigEndian.Uint64(b[:])>>2) | 1
}
