package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/bbolt"
)

// Bolt outbox layout: bucket "outbox" maps an 8-byte big-endian sequence
// number (the order events were added in) to the JSON boltOutboxRecord;
// bucket "outbox_ids" maps an event id to its sequence number; bucket
// "outbox_recent" maps "t:" + tenant to its last outcomes. The file
// has one process, so claims scan the bucket (the outbox is small: it
// holds undelivered events only).
var (
	bucketOutbox       = []byte("outbox")
	bucketOutboxIDs    = []byte("outbox_ids")
	bucketOutboxRecent = []byte("outbox_recent") // tenant → JSON list of outcomes, newest first
)

type boltOutboxRecord struct {
	ID        string `json:"id"`
	Tenant    string `json:"tenant"`
	Type      string `json:"type"`
	Payload   []byte `json:"payload"`
	Created   int64  `json:"created"`
	Attempts  int    `json:"attempts"`
	Next      int64  `json:"next"`
	LastError string `json:"last_error,omitempty"`
	Dead      int64  `json:"dead,omitempty"`
	Claim     string `json:"claim,omitempty"`
	LeaseEnd  int64  `json:"lease_end,omitempty"`
}

func (rec *boltOutboxRecord) event() OutboxEvent {
	return OutboxEvent{
		ID: rec.ID, Tenant: rec.Tenant, Type: rec.Type, Payload: append([]byte(nil), rec.Payload...),
		CreatedAt: fromMillis(rec.Created), Attempts: rec.Attempts, NextAt: fromMillis(rec.Next),
		LastError: rec.LastError, DeadAt: fromMillis(rec.Dead), Claim: rec.Claim,
	}
}

func seqKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

// obBuckets returns the outbox buckets, creating them in a writable tx.
func obBuckets(tx *bbolt.Tx) (events, ids *bbolt.Bucket, err error) {
	if !tx.Writable() {
		return tx.Bucket(bucketOutbox), tx.Bucket(bucketOutboxIDs), nil
	}
	if events, err = tx.CreateBucketIfNotExists(bucketOutbox); err != nil {
		return nil, nil, err
	}
	ids, err = tx.CreateBucketIfNotExists(bucketOutboxIDs)
	return events, ids, err
}

func obPut(events *bbolt.Bucket, key []byte, rec *boltOutboxRecord) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return events.Put(key, raw)
}

// OutboxAdd implements Outbox.
func (b *Bolt) OutboxAdd(ctx context.Context, ev OutboxEvent) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := validOutboxEvent(ev); err != nil {
		return err
	}
	created := ev.CreatedAt
	if created.IsZero() {
		created = b.now()
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		events, ids, err := obBuckets(tx)
		if err != nil {
			return err
		}
		if ids.Get([]byte(ev.ID)) != nil {
			return nil
		}
		n, err := events.NextSequence()
		if err != nil {
			return err
		}
		rec := &boltOutboxRecord{ID: ev.ID, Tenant: ev.Tenant, Type: ev.Type, Payload: ev.Payload,
			Created: created.UnixMilli(), Next: created.UnixMilli()}
		if err := obPut(events, seqKey(n), rec); err != nil {
			return err
		}
		return ids.Put([]byte(ev.ID), seqKey(n))
	})
	if err != nil {
		return fmt.Errorf("store: bolt outbox add: %w", err)
	}
	return nil
}

// OutboxClaim implements Outbox: one pass in sequence order, the first
// queued event of each tenant considered.
func (b *Bolt) OutboxClaim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]OutboxEvent, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	if max <= 0 || lease <= 0 {
		return nil, errors.New("store: outbox claim needs max > 0 and lease > 0")
	}
	var out []OutboxEvent
	nowMS := now.UnixMilli()
	err := b.db.Update(func(tx *bbolt.Tx) error {
		out = nil
		events, _, err := obBuckets(tx)
		if err != nil {
			return err
		}
		seen := make(map[string]bool)
		c := events.Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			var rec boltOutboxRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("corrupt outbox record: %w", err)
			}
			if rec.Dead != 0 || seen[rec.Tenant] {
				continue
			}
			seen[rec.Tenant] = true
			if rec.Next > nowMS || (rec.Claim != "" && rec.LeaseEnd > nowMS) {
				continue
			}
			rec.Claim = newClaimToken()
			rec.LeaseEnd = now.Add(lease).UnixMilli()
			if err := obPut(events, append([]byte(nil), k...), &rec); err != nil {
				return err
			}
			out = append(out, rec.event())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt outbox claim: %w", err)
	}
	return out, nil
}

// obUpdate runs fn on the record of ev.ID if ev's claim is current.
func (b *Bolt) obUpdate(ctx context.Context, ev OutboxEvent, op string, fn func(events, ids *bbolt.Bucket, key []byte, rec *boltOutboxRecord) error) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := validClaim(ev); err != nil {
		return err
	}
	lost := false
	err := b.db.Update(func(tx *bbolt.Tx) error {
		events, ids, err := obBuckets(tx)
		if err != nil {
			return err
		}
		key := ids.Get([]byte(ev.ID))
		var raw []byte
		if key != nil {
			key = append([]byte(nil), key...)
			raw = events.Get(key)
		}
		var rec boltOutboxRecord
		if raw == nil || json.Unmarshal(raw, &rec) != nil || rec.Claim != ev.Claim || rec.Dead != 0 {
			lost = true
			return nil
		}
		return fn(events, ids, key, &rec)
	})
	if err != nil {
		return fmt.Errorf("store: bolt outbox %s: %w", op, err)
	}
	if lost {
		return fmt.Errorf("%w: outbox event %q claimed by another caller", ErrLockLost, ev.ID)
	}
	return nil
}

// OutboxDone implements Outbox.
func (b *Bolt) OutboxDone(ctx context.Context, ev OutboxEvent) error {
	return b.obUpdate(ctx, ev, "done", func(events, ids *bbolt.Bucket, key []byte, _ *boltOutboxRecord) error {
		if err := events.Delete(key); err != nil {
			return err
		}
		if err := ids.Delete([]byte(ev.ID)); err != nil {
			return err
		}
		return obRecord(events.Tx(), ev.Tenant, newRecentEntry(ev, b.now(), false, ""))
	})
}

// recentKey is tenant's key in "outbox_recent" ("t:" + tenant: bbolt
// keys cannot be empty, the tenant of events about no tenant is).
func recentKey(tenant string) []byte { return []byte("t:" + tenant) }

// obRecord prepends an outcome to tenant's recent list, keeping
// OutboxRecentMax.
func obRecord(tx *bbolt.Tx, tenant string, entry []byte) error {
	bk, err := tx.CreateBucketIfNotExists(bucketOutboxRecent)
	if err != nil {
		return err
	}
	var list []json.RawMessage
	if raw := bk.Get(recentKey(tenant)); raw != nil {
		_ = json.Unmarshal(raw, &list)
	}
	list = append([]json.RawMessage{entry}, list...)
	if len(list) > OutboxRecentMax {
		list = list[:OutboxRecentMax]
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return bk.Put(recentKey(tenant), raw)
}

// OutboxRecent implements Outbox.
func (b *Bolt) OutboxRecent(ctx context.Context, tenant string, limit int) ([]OutboxEvent, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, errors.New("store: outbox recent needs limit > 0")
	}
	var out []OutboxEvent
	err := b.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketOutboxRecent)
		if bk == nil {
			return nil
		}
		var list []json.RawMessage
		if raw := bk.Get(recentKey(tenant)); raw != nil {
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("corrupt outbox outcomes: %w", err)
			}
		}
		for _, e := range list {
			if len(out) == limit {
				break
			}
			if ev, ok := parseRecent(tenant, e); ok {
				out = append(out, ev)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt outbox recent: %w", err)
	}
	return out, nil
}

// OutboxRetry implements Outbox.
func (b *Bolt) OutboxRetry(ctx context.Context, ev OutboxEvent, next time.Time, lastErr string) error {
	return b.obUpdate(ctx, ev, "retry", func(events, _ *bbolt.Bucket, key []byte, rec *boltOutboxRecord) error {
		rec.Attempts++
		rec.Next = next.UnixMilli()
		rec.LastError = lastErr
		rec.Claim, rec.LeaseEnd = "", 0
		return obPut(events, key, rec)
	})
}

// OutboxBury implements Outbox.
func (b *Bolt) OutboxBury(ctx context.Context, ev OutboxEvent, at time.Time, lastErr string) error {
	return b.obUpdate(ctx, ev, "bury", func(events, _ *bbolt.Bucket, key []byte, rec *boltOutboxRecord) error {
		rec.Attempts++
		rec.Dead = max(at.UnixMilli(), 1)
		rec.LastError = lastErr
		rec.Claim, rec.LeaseEnd = "", 0
		if err := obPut(events, key, rec); err != nil {
			return err
		}
		return obRecord(events.Tx(), ev.Tenant, newRecentEntry(ev, at, true, lastErr))
	})
}

// obScan returns every record, in sequence order.
func (b *Bolt) obScan(tx *bbolt.Tx) ([]boltOutboxRecord, error) {
	events, _, _ := obBuckets(tx)
	if events == nil {
		return nil, nil
	}
	var recs []boltOutboxRecord
	err := events.ForEach(func(_, v []byte) error {
		var rec boltOutboxRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("corrupt outbox record: %w", err)
		}
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

// OutboxList implements Outbox.
func (b *Bolt) OutboxList(ctx context.Context, dead bool, limit int) ([]OutboxEvent, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, errors.New("store: outbox list needs limit > 0")
	}
	var out []OutboxEvent
	err := b.db.View(func(tx *bbolt.Tx) error {
		recs, err := b.obScan(tx)
		if err != nil {
			return err
		}
		for i := range recs {
			if (recs[i].Dead != 0) == dead {
				out = append(out, recs[i].event())
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt outbox list: %w", err)
	}
	if dead {
		sort.SliceStable(out, func(i, j int) bool { return out[i].DeadAt.After(out[j].DeadAt) })
	} else {
		sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// OutboxRedeliver implements Outbox.
func (b *Bolt) OutboxRedeliver(ctx context.Context, id string, now time.Time) (int, error) {
	if err := errCtx(ctx); err != nil {
		return 0, err
	}
	moved, found := 0, false
	nowMS := now.UnixMilli()
	err := b.db.Update(func(tx *bbolt.Tx) error {
		moved, found = 0, false
		events, ids, err := obBuckets(tx)
		if err != nil {
			return err
		}
		var keys [][]byte
		if id != "" {
			if k := ids.Get([]byte(id)); k != nil {
				keys = append(keys, append([]byte(nil), k...))
			}
		} else {
			_ = events.ForEach(func(k, _ []byte) error { keys = append(keys, append([]byte(nil), k...)); return nil })
		}
		for _, k := range keys {
			raw := events.Get(k)
			if raw == nil {
				continue
			}
			var rec boltOutboxRecord
			if err := json.Unmarshal(raw, &rec); err != nil {
				return fmt.Errorf("corrupt outbox record: %w", err)
			}
			found = true
			switch {
			case rec.Dead != 0: // to the end of its tenant's queue
				rec.Dead, rec.Attempts, rec.Next, rec.LastError, rec.Claim, rec.LeaseEnd = 0, 0, nowMS, "", "", 0
				n, err := events.NextSequence()
				if err != nil {
					return err
				}
				if err := events.Delete(k); err != nil {
					return err
				}
				if err := obPut(events, seqKey(n), &rec); err != nil {
					return err
				}
				if err := ids.Put([]byte(rec.ID), seqKey(n)); err != nil {
					return err
				}
				moved++
			case rec.Next > nowMS && rec.Claim == "":
				rec.Next = nowMS
				if err := obPut(events, k, &rec); err != nil {
					return err
				}
				moved++
			}
		}
		return nil
	})
	if err != nil {
		return moved, fmt.Errorf("store: bolt outbox redeliver: %w", err)
	}
	if id != "" && !found {
		return 0, fmt.Errorf("%w: outbox event %q", ErrNotFound, id)
	}
	return moved, nil
}

// OutboxStats implements Outbox.
func (b *Bolt) OutboxStats(ctx context.Context) (OutboxStats, error) {
	if err := errCtx(ctx); err != nil {
		return OutboxStats{}, err
	}
	var st OutboxStats
	err := b.db.View(func(tx *bbolt.Tx) error {
		recs, err := b.obScan(tx)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if rec.Dead != 0 {
				st.Dead++
				continue
			}
			st.Queued++
			if at := fromMillis(rec.Created); st.Oldest.IsZero() || at.Before(st.Oldest) {
				st.Oldest = at
			}
		}
		return nil
	})
	if err != nil {
		return OutboxStats{}, fmt.Errorf("store: bolt outbox stats: %w", err)
	}
	return st, nil
}
