package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// Batched reads, writes and locks for bulk imports: the same operations as
// Get, Put, TryLock and Lock.Release, with the same results per item, in a
// few round trips (Redis: pipelines) or one transaction (bolt: one fsync)
// for a whole batch. An item's failure never affects another item.

// Batcher is implemented by stores that read and write many tenants at
// once. GetMany's and PutMany's results are index-aligned with their
// arguments; each item behaves as Get / Put would (ErrNotFound,
// ErrDecrypt, ErrConflict ...), and PutMany sets Version and WriteID of
// every tenant it wrote, publishes its change and indexes it. Safe for
// concurrent use.
type Batcher interface {
	GetMany(ctx context.Context, ids []string) ([]*Tenant, []error)
	PutMany(ctx context.Context, ts []*Tenant, expect []int64) ([]int64, []error)
}

// BatchLocker is implemented by stores that take and release many named
// locks at once; each item behaves as TryLock / Lock.Release would. Safe
// for concurrent use.
type BatchLocker interface {
	TryLockMany(ctx context.Context, names []string, ttl time.Duration) ([]Lock, []error)
	// ReleaseMany releases every non-nil lock (of this store).
	ReleaseMany(ctx context.Context, locks []Lock) []error
}

// GetMany is Batcher.GetMany on s, or one Get per id.
func GetMany(ctx context.Context, s Store, ids []string) ([]*Tenant, []error) {
	if b, ok := s.(Batcher); ok {
		return b.GetMany(ctx, ids)
	}
	ts, errs := make([]*Tenant, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		ts[i], errs[i] = s.Get(ctx, id)
	}
	return ts, errs
}

// PutMany is Batcher.PutMany on s, or one Put per tenant.
func PutMany(ctx context.Context, s Store, ts []*Tenant, expect []int64) ([]int64, []error) {
	if b, ok := s.(Batcher); ok {
		return b.PutMany(ctx, ts, expect)
	}
	vers, errs := make([]int64, len(ts)), make([]error, len(ts))
	for i, t := range ts {
		vers[i], errs[i] = s.Put(ctx, t, expect[i])
	}
	return vers, errs
}

// TryLockMany is BatchLocker.TryLockMany on s, or one TryLock per name.
func TryLockMany(ctx context.Context, s Store, names []string, ttl time.Duration) ([]Lock, []error) {
	if b, ok := s.(BatchLocker); ok {
		return b.TryLockMany(ctx, names, ttl)
	}
	locks, errs := make([]Lock, len(names)), make([]error, len(names))
	for i, n := range names {
		locks[i], errs[i] = s.TryLock(ctx, n, ttl)
	}
	return locks, errs
}

// ReleaseMany is BatchLocker.ReleaseMany on s, or one Release per lock.
func ReleaseMany(ctx context.Context, s Store, locks []Lock) []error {
	if b, ok := s.(BatchLocker); ok {
		return b.ReleaseMany(ctx, locks)
	}
	errs := make([]error, len(locks))
	for i, l := range locks {
		if l != nil {
			errs[i] = l.Release(ctx)
		}
	}
	return errs
}

var (
	_ Batcher     = (*Redis)(nil)
	_ BatchLocker = (*Redis)(nil)
	_ Batcher     = (*Bolt)(nil)
)

// GetMany implements Batcher: one pipelined HMGET per tenant.
func (r *Redis) GetMany(ctx context.Context, ids []string) ([]*Tenant, []error) {
	ts, errs := make([]*Tenant, len(ids)), make([]error, len(ids))
	cmds := make([]*redis.SliceCmd, len(ids))
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, r.tenantKey(id), "v", "d", "w")
		}
		return nil
	})
	for i, id := range ids {
		vals, err := cmds[i].Result()
		if err != nil {
			errs[i] = fmt.Errorf("store: redis get tenant %q: %w", id, err)
			continue
		}
		ver, blob, err := parseRaw(id, vals)
		if err == nil {
			ts[i], err = decodeTenant(r.keys, id, blob)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		ts[i].Version = ver
		ts[i].WriteID, _ = vals[2].(string)
	}
	return ts, errs
}

// isNoScript reports a script the server does not know (EVALSHA after a
// restart or failover): the item is retried on its own with Script.Run.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// PutMany implements Batcher in three pipelines whatever the batch's size:
// the new ids' index entries (first, as Put does), the compare-and-set
// writes (cas_put.lua), then the due index and the change notifications.
// A notification that fails is retried and, failing still, counted as lost
// as Put does (NotifyLosses).
func (r *Redis) PutMany(ctx context.Context, ts []*Tenant, expect []int64) ([]int64, []error) {
	n := len(ts)
	vers, errs := make([]int64, n), make([]error, n)
	blobs, wids := make([][]byte, n), make([]string, n)
	for i, t := range ts {
		if expect[i] < 0 {
			errs[i] = fmt.Errorf("store: negative expected version %d", expect[i])
			continue
		}
		blobs[i], wids[i], errs[i] = encodeTenant(r.keys, t)
	}
	// 1. Index first for creates: a crash leaves a listed id without a
	// record (List filters it out), never a record that is not listed.
	adds := make([]*redis.IntCmd, n)
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range ts {
			if errs[i] == nil && expect[i] == 0 {
				adds[i] = p.SAdd(ctx, r.shardKeys(indexShard(t.ID))[0], t.ID)
			}
		}
		return nil
	})
	for i, c := range adds {
		if c != nil && c.Err() != nil {
			errs[i] = fmt.Errorf("store: redis put tenant %q: index: %w", ts[i].ID, c.Err())
		}
	}
	// 2. The writes.
	_ = casPutScript.Load(ctx, r.client).Err() // else NOSCRIPT per item, retried below
	cas := make([]*redis.Cmd, n)
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range ts {
			if errs[i] == nil {
				cas[i] = casPutScript.EvalSha(ctx, p, []string{r.tenantKey(t.ID)}, expect[i], blobs[i], t.WriteID, wids[i])
			}
		}
		return nil
	})
	for i, c := range cas {
		if c == nil {
			continue
		}
		id := ts[i].ID
		res, err := c.Int64Slice()
		if isNoScript(err) {
			res, err = casPutScript.Run(ctx, r.client, []string{r.tenantKey(id)}, expect[i], blobs[i], ts[i].WriteID, wids[i]).Int64Slice()
		}
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("store: redis put tenant %q: %w", id, err)
		case len(res) != 2:
			errs[i] = fmt.Errorf("store: redis put tenant %q: unexpected script reply %v", id, res)
		case res[0] != 1:
			errs[i] = fmt.Errorf("%w: tenant %q is at version %d, expected %d", ErrConflict, id, res[1], expect[i])
		default:
			vers[i] = res[1]
		}
	}
	// 3. The due index and the notifications of what was written.
	_ = indexPutScript.Load(ctx, r.client).Err()
	idx, pubs := make([]*redis.Cmd, n), make([]*redis.IntCmd, n)
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range ts {
			if errs[i] == nil {
				keys, args := r.indexArgs(t)
				idx[i] = indexPutScript.EvalSha(ctx, p, keys, args...)
				pubs[i] = p.Publish(ctx, r.channel(), t.ID)
			}
		}
		return nil
	})
	for i, t := range ts {
		if errs[i] != nil {
			continue
		}
		if err := idx[i].Err(); isNoScript(err) {
			if err := r.index(ctx, t); err != nil {
				r.report("index", err)
			}
		} else if err != nil {
			r.report("index", err)
		}
		if pubs[i].Err() != nil {
			r.publish(ctx, t.ID) // retried, then counted as lost
		}
		t.Version, t.WriteID = vers[i], wids[i]
	}
	return vers, errs
}

// TryLockMany implements BatchLocker: one pipelined SET NX per lock key.
// A name whose second key (of earlier versions) was held gives back the
// first, as TryLock does.
func (r *Redis) TryLockMany(ctx context.Context, names []string, ttl time.Duration) ([]Lock, []error) {
	locks, errs := make([]Lock, len(names)), make([]error, len(names))
	rl := make([]*redisLock, len(names))
	cmds := make([][]*redis.BoolCmd, len(names))
	for i, name := range names {
		owner, err := newLockOwner(name, ttl)
		if err != nil {
			errs[i] = err
			continue
		}
		keys := []string{r.lockKey(name)}
		if legacy := r.legacyLockKey(name); legacy != keys[0] {
			keys = append(keys, legacy)
		}
		rl[i] = &redisLock{r: r, name: name, keys: keys, owner: owner}
	}
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, l := range rl {
			if l == nil {
				continue
			}
			for _, key := range l.keys {
				cmds[i] = append(cmds[i], p.SetNX(ctx, key, l.owner, ttl))
			}
		}
		return nil
	})
	for i, l := range rl {
		if l == nil {
			continue
		}
		var taken []string
		for k, c := range cmds[i] {
			ok, err := c.Result()
			switch {
			case err != nil && errs[i] == nil:
				errs[i] = fmt.Errorf("store: redis lock %q: %w", l.name, err)
			case err == nil && ok:
				taken = append(taken, l.keys[k])
			case err == nil && errs[i] == nil:
				errs[i] = fmt.Errorf("%w: %q", ErrLockHeld, l.name)
			}
		}
		if errs[i] != nil {
			if len(taken) > 0 { // give back what was taken; on failure it expires with ttl
				held := &redisLock{r: r, name: l.name, keys: taken, owner: l.owner}
				_ = held.Release(context.WithoutCancel(ctx))
			}
			continue
		}
		locks[i] = l
	}
	return locks, errs
}

// ReleaseMany implements BatchLocker: one pipelined release per lock key.
func (r *Redis) ReleaseMany(ctx context.Context, locks []Lock) []error {
	errs := make([]error, len(locks))
	_ = lockReleaseScript.Load(ctx, r.client).Err()
	cmds := make([][]*redis.Cmd, len(locks))
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, l := range locks {
			if rl, ok := l.(*redisLock); ok && rl.r == r {
				for _, key := range rl.keys {
					cmds[i] = append(cmds[i], lockReleaseScript.EvalSha(ctx, p, []string{key}, rl.owner))
				}
			}
		}
		return nil
	})
	for i, l := range locks {
		if l == nil {
			continue
		}
		if cmds[i] == nil {
			errs[i] = l.Release(ctx)
			continue
		}
		lost := false
		for _, c := range cmds[i] {
			v, err := c.Int64()
			if isNoScript(err) {
				errs[i] = l.Release(ctx)
				lost = false
				break
			}
			if err != nil && errs[i] == nil {
				errs[i] = fmt.Errorf("store: redis release lock %q: %w", l.(*redisLock).name, err)
			}
			if err == nil && v != 1 {
				lost = true
			}
		}
		if errs[i] == nil && lost {
			errs[i] = fmt.Errorf("%w: %q", ErrLockLost, l.(*redisLock).name)
		}
	}
	return errs
}

// GetMany implements Batcher: one read transaction.
func (b *Bolt) GetMany(ctx context.Context, ids []string) ([]*Tenant, []error) {
	ts, errs := make([]*Tenant, len(ids)), make([]error, len(ids))
	if err := errCtx(ctx); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return ts, errs
	}
	vals := make([][]byte, len(ids))
	err := b.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketTenants)
		for i, id := range ids {
			if v := bk.Get([]byte(id)); v != nil && id != "" {
				vals[i] = bytes.Clone(v)
			}
		}
		return nil
	})
	for i, id := range ids {
		switch {
		case id == "":
			errs[i] = errors.New("store: tenant id is empty")
		case err != nil:
			errs[i] = fmt.Errorf("store: bolt get tenant %q: %w", id, err)
		case vals[i] == nil:
			errs[i] = fmt.Errorf("%w: tenant %q", ErrNotFound, id)
		default:
			ver, blob, err := splitVersion(id, vals[i])
			if err == nil {
				ts[i], err = decodeTenant(b.keys, id, blob)
			}
			if err != nil {
				ts[i], errs[i] = nil, err
				continue
			}
			ts[i].Version = ver
		}
	}
	return ts, errs
}

// PutMany implements Batcher: every write in one transaction (one fsync),
// each checked as Put checks it; a conflict skips that tenant only. If the
// transaction itself fails, each tenant is written on its own with Put.
func (b *Bolt) PutMany(ctx context.Context, ts []*Tenant, expect []int64) ([]int64, []error) {
	n := len(ts)
	vers, errs := make([]int64, n), make([]error, n)
	if err := errCtx(ctx); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return vers, errs
	}
	blobs, wids := make([][]byte, n), make([]string, n)
	for i, t := range ts {
		if expect[i] < 0 {
			errs[i] = fmt.Errorf("store: negative expected version %d", expect[i])
			continue
		}
		blobs[i], wids[i], errs[i] = encodeTenant(b.keys, t)
	}
	txErrs := make([]error, n)
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketTenants)
		for i, t := range ts {
			txErrs[i], vers[i] = nil, 0
			if errs[i] != nil {
				continue
			}
			id := t.ID
			var cur int64
			var stored []byte
			if v := bk.Get([]byte(id)); v != nil {
				var err error
				if cur, stored, err = splitVersion(id, v); err != nil {
					txErrs[i] = fmt.Errorf("store: bolt put tenant %q: %w", id, err)
					continue
				}
			}
			if cur != expect[i] {
				txErrs[i] = fmt.Errorf("%w: tenant %q is at version %d, expected %d", ErrConflict, id, cur, expect[i])
				continue
			}
			if t.WriteID != "" && storedWriteID(stored) != t.WriteID {
				txErrs[i] = fmt.Errorf("%w: tenant %q at version %d was written by another write", ErrConflict, id, cur)
				continue
			}
			val := make([]byte, 8+len(blobs[i]))
			binary.BigEndian.PutUint64(val, uint64(cur+1))
			copy(val[8:], blobs[i])
			if err := bk.Put([]byte(id), val); err != nil {
				return err
			}
			if err := indexDue(tx, id, t); err != nil {
				return err
			}
			vers[i] = cur + 1
		}
		return nil
	})
	if err != nil { // the whole transaction failed: nothing was written
		for i, t := range ts {
			if errs[i] == nil {
				vers[i], errs[i] = b.Put(ctx, t, expect[i])
			}
		}
		return vers, errs
	}
	for i, t := range ts {
		if errs[i] == nil {
			errs[i] = txErrs[i]
		}
		if errs[i] == nil {
			b.notify(t.ID)
			t.Version, t.WriteID = vers[i], wids[i]
		}
	}
	return vers, errs
}
