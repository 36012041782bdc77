package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

var _ Lister = (*Bolt)(nil)

// The due index of the embedded store, kept in the same transaction as
// every record write:
//
//	bucket "due"    kind ('e' by refresh expiry, 'i' by last activity) +
//	                8-byte big-endian Unix ms + id → empty
//	bucket "due-of" id → its key in "due" (to replace it on the next write)
var (
	bucketDue   = []byte("due")
	bucketDueOf = []byte("due-of")
)

func dueEntry(kind byte, at time.Time, id string) []byte {
	k := make([]byte, 9+len(id))
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:9], uint64(at.UnixMilli()))
	copy(k[9:], id)
	return k
}

// indexDue replaces id's due entry by t's (t nil: removes it).
func indexDue(tx *bbolt.Tx, id string, t *Tenant) error {
	due, of := tx.Bucket(bucketDue), tx.Bucket(bucketDueOf)
	if old := of.Get([]byte(id)); old != nil {
		if err := due.Delete(bytes.Clone(old)); err != nil {
			return err
		}
		if err := of.Delete([]byte(id)); err != nil {
			return err
		}
	}
	if t == nil {
		return nil
	}
	kind, at := dueKind(t)
	if kind == 0 {
		return nil
	}
	if at.UnixMilli() < 0 {
		at = time.UnixMilli(0) // big-endian order holds for non-negative times
	}
	k := dueEntry(kind, at, id)
	if err := due.Put(k, nil); err != nil {
		return err
	}
	return of.Put([]byte(id), k)
}

// buildDueIndex indexes every record it can open; OpenBolt runs it once, when it
// creates the due buckets in a file of an earlier version.
func buildDueIndex(tx *bbolt.Tx, keys *Keyring) error {
	return tx.Bucket(bucketTenants).ForEach(func(k, v []byte) error {
		id := string(k)
		_, blob, err := splitVersion(id, v)
		if err != nil {
			return err
		}
		t, err := decodeTenant(keys, id, blob)
		if err != nil {
			return nil // unreadable with these keys: left to the refresher's full scan
		}
		return indexDue(tx, id, t)
	})
}

// ListPage returns ids in sorted order after cursor (the last id of the
// previous page, base64url).
func (b *Bolt) ListPage(ctx context.Context, cursor string, limit int) ([]string, string, error) {
	if err := errCtx(ctx); err != nil {
		return nil, "", err
	}
	if limit < 1 || limit > MaxPageLimit {
		return nil, "", fmt.Errorf("store: page limit %d outside 1..%d", limit, MaxPageLimit)
	}
	after := ""
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || !ValidTenantID(string(b)) {
			return nil, "", ErrInvalidCursor
		}
		after = string(b)
	}
	ids := []string{}
	more := false
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketTenants).Cursor()
		var k []byte
		if after == "" {
			k, _ = c.First()
		} else if k, _ = c.Seek([]byte(after)); k != nil && string(k) == after {
			k, _ = c.Next()
		}
		for ; k != nil; k, _ = c.Next() {
			if len(ids) == limit {
				more = true
				break
			}
			ids = append(ids, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: bolt list tenants: %w", err)
	}
	next := ""
	if more {
		next = base64.RawURLEncoding.EncodeToString([]byte(ids[len(ids)-1]))
	}
	return ids, next, nil
}

// ListDue walks the due index up to expiresBy and idleBy.
func (b *Bolt) ListDue(ctx context.Context, expiresBy, idleBy time.Time) ([]string, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	ids := []string{}
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketDue).Cursor()
		walk := func(kind byte, by time.Time) {
			end := dueEntry(kind, by, "")
			for k, _ := c.Seek([]byte{kind}); k != nil && k[0] == kind; k, _ = c.Next() {
				if bytes.Compare(k[:9], end[:9]) > 0 {
					return
				}
				ids = append(ids, string(k[9:]))
			}
		}
		walk('e', expiresBy)
		if !idleBy.IsZero() {
			walk('i', idleBy)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt list due tenants: %w", err)
	}
	return ids, nil
}
