package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lsproxy/lsproxy/internal/defect"
)

// RekeyOutcome says what Rekey did with one tenant record.
type RekeyOutcome int

const (
	// RekeyCurrent: every token was already sealed with the primary key (or
	// the record holds no token); nothing was written.
	RekeyCurrent RekeyOutcome = iota + 1
	// RekeyRewritten: the record was rewritten with its tokens sealed with
	// the primary key.
	RekeyRewritten
	// RekeyGone: the tenant was deleted before it could be rewritten.
	RekeyGone
)

func (o RekeyOutcome) String() string {
	switch o {
	case RekeyCurrent:
		return "current"
	case RekeyRewritten:
		return "rewritten"
	case RekeyGone:
		return "gone"
	}
	return fmt.Sprintf("RekeyOutcome(%d)", int(o))
}

// ErrRekeyUnsupported: Rekey was given a Store that is not one of this
// package's backends.
var ErrRekeyUnsupported = errors.New("store: rekey needs the Redis or embedded store")

// rekeyable is implemented by both backends: the stored blob of a tenant,
// to see which keys sealed it, and the keyring that seals new writes.
type rekeyable interface {
	Store
	getRaw(ctx context.Context, id string) (version int64, blob []byte, err error)
	keyring() *Keyring
}

var (
	_ rekeyable = (*Bolt)(nil)
	_ rekeyable = (*Redis)(nil)
)

// rekeyHook, when set (tests only), runs between Rekey's read and its
// compare-and-set write. nil in production.
var rekeyHook func(id string)

// Rekey rewrites tenant id so that its tokens are sealed with the primary
// key of s's keyring, leaving every other field as it was (the version
// grows by one and subscribers are notified). It writes nothing when the
// record is already current.
//
// It is safe while other processes use the store: the write is a
// compare-and-set on the version and write id read, so it never overwrites a newer
// record; on a conflict it reads again, at most attempts times in all. A
// refresh whose fenced write meets the version Rekey wrote re-reads, finds
// its refresh token unchanged and writes its new tokens (auth.Manager), so
// no refresh result is lost.
//
// Errors: an error wrapping ErrDecrypt when no configured key opens the
// record (it names the tenant, the key id that sealed it and the configured
// key ids; nothing is written and no token is returned); one wrapping
// ErrConflict when the record changed on every attempt; ErrRekeyUnsupported
// for a Store of another package; store errors otherwise. Safe for
// concurrent use.
func Rekey(ctx context.Context, s Store, id string, attempts int) (RekeyOutcome, error) {
	rs, ok := s.(rekeyable)
	if !ok {
		return 0, ErrRekeyUnsupported
	}
	keys := rs.keyring()
	if attempts < 1 {
		attempts = 1
	}
	for range attempts {
		ver, blob, err := rs.getRaw(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return RekeyGone, nil
		}
		if err != nil {
			return 0, err
		}
		t, err := decodeTenant(keys, id, blob) // proves every token opens
		if err != nil {
			return 0, err
		}
		current, err := sealedWithPrimary(keys, blob)
		if err != nil {
			return 0, fmt.Errorf("store: record of tenant %q is corrupt: %w", id, err)
		}
		if current {
			return RekeyCurrent, nil
		}
		if rekeyHook != nil {
			rekeyHook(id)
		}
		// Fenced on the version and the write id read (t.WriteID, from the
		// blob): a tenant deleted and created again, or rewritten after a
		// failover lost writes, repeats the version number but not the
		// write id (SPEC §3 rules 12 and 19). Records from before write ids
		// have none and are fenced by the version only.
		if defect.On(defect.RekeyVersionOnly) {
			t.WriteID = ""
		}
		_, err = s.Put(ctx, t, ver)
		if errors.Is(err, ErrConflict) {
			continue // written meanwhile (a refresh, an admin): read again
		}
		if err != nil {
			return 0, err
		}
		return RekeyRewritten, nil
	}
	return 0, fmt.Errorf("%w: tenant %q changed on each of %d rekey attempts; run rekey again", ErrConflict, id, attempts)
}

// sealedWithPrimary reports whether every sealed token in a stored record
// carries the primary key's id.
func sealedWithPrimary(keys *Keyring, blob []byte) (bool, error) {
	var rec struct {
		Access  *sealed `json:"access_token"`
		Refresh *sealed `json:"refresh_token"`
	}
	if err := json.Unmarshal(blob, &rec); err != nil {
		return false, err
	}
	primary := keys.PrimaryID()
	for _, s := range []*sealed{rec.Access, rec.Refresh} {
		if s != nil && s.KID != primary {
			return false, nil
		}
	}
	return true, nil
}
