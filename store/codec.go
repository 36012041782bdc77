package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Field names used in the record and as associated data when sealing.
const (
	fieldAccess  = "access_token"
	fieldRefresh = "refresh_token"
	// The candidate grant's tokens (Tenant.Candidate).
	fieldCandAccess  = "candidate_access_token"
	fieldCandRefresh = "candidate_refresh_token"
)

// record is a tenant as stored by both backends: the Tenant's JSON fields
// with the tokens sealed. Version is kept by the backend beside the blob.
//
// Write is the random id of the Put that wrote the blob (Tenant.WriteID). It
// makes two Puts of the same content distinct, so a backend can tell its own
// retried write (reply lost, command resent) from a competing one, and it
// fences compare-and-set beside the version (SPEC §3 rule 12).
type record struct {
	*Tenant
	Access  *sealed `json:"access_token,omitempty"`
	Refresh *sealed `json:"refresh_token,omitempty"`
	Write   string  `json:"write_id"`

	CandAccess  *sealed `json:"candidate_access_token,omitempty"`
	CandRefresh *sealed `json:"candidate_refresh_token,omitempty"`
}

// encodeTenant returns the stored form of t with a new random write id,
// tokens sealed with the primary key of keys. An empty token stays empty (is
// not sealed).
func encodeTenant(keys *Keyring, t *Tenant) (blob []byte, writeID string, err error) {
	if t == nil {
		return nil, "", errors.New("store: nil tenant")
	}
	if t.ID == "" {
		return nil, "", errors.New("store: tenant id is empty")
	}
	if writeID, err = newWriteID(); err != nil {
		return nil, "", err
	}
	rec := record{Tenant: t, Write: writeID}
	if t.AccessToken != "" {
		if rec.Access, err = keys.seal(t.ID, fieldAccess, []byte(t.AccessToken)); err != nil {
			return nil, "", err
		}
	}
	if t.RefreshToken != "" {
		if rec.Refresh, err = keys.seal(t.ID, fieldRefresh, []byte(t.RefreshToken)); err != nil {
			return nil, "", err
		}
	}
	if c := t.Candidate; c != nil {
		if c.AccessToken != "" {
			if rec.CandAccess, err = keys.seal(t.ID, fieldCandAccess, []byte(c.AccessToken)); err != nil {
				return nil, "", err
			}
		}
		if c.RefreshToken != "" {
			if rec.CandRefresh, err = keys.seal(t.ID, fieldCandRefresh, []byte(c.RefreshToken)); err != nil {
				return nil, "", err
			}
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, "", fmt.Errorf("store: encoding tenant %q: %w", t.ID, err)
	}
	return b, writeID, nil
}

// newWriteID returns a random 128-bit write id.
func newWriteID() (string, error) {
	var w [16]byte
	if _, err := rand.Read(w[:]); err != nil {
		return "", fmt.Errorf("store: reading random write id: %w", err)
	}
	return hex.EncodeToString(w[:]), nil
}

// storedWriteID returns the write id inside a stored blob ("" if none).
func storedWriteID(b []byte) string {
	var w struct {
		Write string `json:"write_id"`
	}
	_ = json.Unmarshal(b, &w) // a corrupt blob has no id: any expected id conflicts
	return w.Write
}

// decodeTenant parses the stored form of the tenant stored under id and
// opens its tokens. WriteID is the blob's write id; the caller sets Version
// (and may set WriteID from its own bookkeeping). Tokens that no key opens yield
// an error wrapping ErrDecrypt.
func decodeTenant(keys *Keyring, id string, b []byte) (*Tenant, error) {
	rec := record{Tenant: &Tenant{}}
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("store: record of tenant %q is corrupt: %w", id, err)
	}
	if rec.ID != id {
		return nil, fmt.Errorf("store: record stored under tenant %q belongs to tenant %q", id, rec.ID)
	}
	t := rec.Tenant
	t.WriteID = rec.Write
	// The storage key, not a field of the blob, is the associated data: a
	// blob moved to another tenant's key does not open.
	if rec.Access != nil {
		pt, err := keys.open(id, fieldAccess, rec.Access)
		if err != nil {
			return nil, err
		}
		t.AccessToken = string(pt)
	}
	if rec.Refresh != nil {
		pt, err := keys.open(id, fieldRefresh, rec.Refresh)
		if err != nil {
			return nil, err
		}
		t.RefreshToken = string(pt)
	}
	if c := t.Candidate; c != nil {
		for _, f := range []struct {
			s     *sealed
			field string
			dst   *string
		}{{rec.CandAccess, fieldCandAccess, &c.AccessToken}, {rec.CandRefresh, fieldCandRefresh, &c.RefreshToken}} {
			if f.s == nil {
				continue
			}
			pt, err := keys.open(id, f.field, f.s)
			if err != nil {
				return nil, err
			}
			*f.dst = string(pt)
		}
	}
	t.normalize()
	return t, nil
}
