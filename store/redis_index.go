package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Lister = (*Redis)(nil)

var (
	//go:embed lua/index_put.lua
	indexPutLua string
	//go:embed lua/index_del.lua
	indexDelLua string

	indexPutScript = redis.NewScript(indexPutLua)
	indexDelScript = redis.NewScript(indexDelLua)
)

// IndexShards is how many keys the tenant index and the due index are
// split into. Each shard has its own hash tag, so Redis Cluster spreads them
// over its slots and no key holds more than about 1/256 of the ids (1M
// tenants: about 4,000 ids, well under 1 MB, per key).
const IndexShards = 256

// indexShard is id's shard (FNV-1a).
func indexShard(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % IndexShards)
}

// Index keys of shard s, with prefix P (one hash tag per shard):
//
//	P tenants:{ixS}   set of tenant ids
//	P due:e:{ixS}     sorted set: id by refresh expiry (Unix ms)
//	P due:i:{ixS}     sorted set: id by last activity (Unix ms), when the provider gave no expiry
//	P flagged:{ixS}   set of the ids of flagged tenants, for CountByStatus
//	P pending:{ixS}   set of the ids of pending tenants, for CountByStatus
//	P identify:{ixS}  set of the ids of tenants with a background
//	                  identification pending, for ListIdentifyPending
//	P tenants         the single id set of earlier versions, still read
//	P index:v2        marker: the due index was built from that set
//	P index:status    marker: the flagged and pending sets were built from
//	                  every record (index:flagged, of earlier versions,
//	                  predates the pending sets and is not enough)
func (r *Redis) shardKeys(s int) []string {
	tag := "{ix" + strconv.Itoa(s) + "}"
	return []string{r.prefix + "tenants:" + tag, r.prefix + "due:e:" + tag, r.prefix + "due:i:" + tag, r.prefix + "flagged:" + tag, r.prefix + "pending:" + tag, r.prefix + "identify:" + tag}
}

func (r *Redis) indexMarker() string   { return r.prefix + "index:v2" }
func (r *Redis) flaggedMarker() string { return r.prefix + "index:status" }

// index records t in its shard's id set and due index.
func (r *Redis) index(ctx context.Context, t *Tenant) error {
	keys, args := r.indexArgs(t)
	return indexPutScript.Run(ctx, r.client, keys, args...).Err()
}

// indexArgs are index_put.lua's keys and arguments for t.
func (r *Redis) indexArgs(t *Tenant) ([]string, []any) {
	kind, at := dueKind(t)
	k := ""
	if kind != 0 {
		k = string(kind)
	}
	flagged := "0"
	if t.Status == StatusReauthorizationRequired {
		flagged = "1"
	}
	pending := "0"
	if t.Status == StatusPending {
		pending = "1"
	}
	identify := "0"
	if t.Identify != nil {
		identify = "1"
	}
	return r.shardKeys(indexShard(t.ID)), []any{t.ID, k, at.UnixMilli(), flagged, pending, identify}
}

// unindex removes id from its shard's id set and due index, and from the
// earlier single set.
func (r *Redis) unindex(ctx context.Context, id string) error {
	if err := indexDelScript.Run(ctx, r.client, r.shardKeys(indexShard(id)), id).Err(); err != nil {
		return err
	}
	return r.client.SRem(ctx, r.indexKey(), id).Err()
}

// allIndexed returns every id in the shards and the earlier single set,
// deduplicated, sorted.
func (r *Redis) allIndexed(ctx context.Context) ([]string, error) {
	cmds := make([]*redis.StringSliceCmd, IndexShards+1)
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < IndexShards; s++ {
			cmds[s] = p.SMembers(ctx, r.shardKeys(s)[0])
		}
		cmds[IndexShards] = p.SMembers(ctx, r.indexKey())
		return nil
	})
	if err != nil {
		return nil, err
	}
	seen := make(map[string]struct{})
	var ids []string
	for _, c := range cmds {
		for _, id := range c.Val() {
			if _, dup := seen[id]; !dup {
				seen[id] = struct{}{}
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// existing returns the ids among ids whose record exists, in order.
func (r *Redis) existing(ctx context.Context, ids []string) ([]string, error) {
	cmds := make([]*redis.IntCmd, len(ids))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Exists(ctx, r.tenantKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if cmds[i].Val() == 1 {
			out = append(out, id)
		}
	}
	return out, nil
}

// ListPage pages through the shards (then the earlier single set) with
// SSCAN. The cursor is "shard.sscan-cursor.skip". Ids whose record is gone
// are left out, so a page may hold fewer than limit ids before the end.
func (r *Redis) ListPage(ctx context.Context, cursor string, limit int) ([]string, string, error) {
	if limit < 1 || limit > MaxPageLimit {
		return nil, "", fmt.Errorf("store: page limit %d outside 1..%d", limit, MaxPageLimit)
	}
	shard, cur, skip, err := parseRedisCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	var page []string
	for shard <= IndexShards && len(page) < limit {
		key := r.indexKey()
		if shard < IndexShards {
			key = r.shardKeys(shard)[0]
		}
		want := limit - len(page)
		batch, next, err := r.client.SScan(ctx, key, cur, "", int64(want+skip)).Result()
		if err != nil {
			return nil, "", fmt.Errorf("store: redis list tenants: %w", err)
		}
		batch = batch[min(skip, len(batch)):]
		if len(batch) > want {
			// Resume inside this batch: rescan from cur, skipping what
			// this page took.
			page = append(page, batch[:want]...)
			skip += want
			break
		}
		page = append(page, batch...)
		skip = 0
		if next == 0 {
			shard, cur = shard+1, 0
		} else {
			cur = next
		}
	}
	next := ""
	if shard <= IndexShards {
		next = fmt.Sprintf("%d.%d.%d", shard, cur, skip)
	}
	if len(page) == 0 {
		return []string{}, next, nil
	}
	page, err = r.existing(ctx, page)
	if err != nil {
		return nil, "", fmt.Errorf("store: redis list tenants: %w", err)
	}
	return page, next, nil
}

func parseRedisCursor(c string) (shard int, cur uint64, skip int, err error) {
	if c == "" {
		return 0, 0, 0, nil
	}
	parts := strings.Split(c, ".")
	if len(parts) != 3 {
		return 0, 0, 0, ErrInvalidCursor
	}
	s, err1 := strconv.Atoi(parts[0])
	cu, err2 := strconv.ParseUint(parts[1], 10, 64)
	sk, err3 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || s < 0 || s > IndexShards || sk < 0 || sk > 1<<20 {
		return 0, 0, 0, ErrInvalidCursor
	}
	return s, cu, sk, nil
}

// ListDue reads every shard's due sets (one pipelined ZRANGEBYSCORE per
// set), after building the due index once from the earlier single set.
func (r *Redis) ListDue(ctx context.Context, expiresBy, idleBy time.Time) ([]string, error) {
	if err := r.ensureDueIndex(ctx); err != nil {
		return nil, err
	}
	var cmds []*redis.StringSliceCmd
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < IndexShards; s++ {
			k := r.shardKeys(s)
			cmds = append(cmds, p.ZRangeByScore(ctx, k[1], &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(expiresBy.UnixMilli(), 10)}))
			if !idleBy.IsZero() {
				cmds = append(cmds, p.ZRangeByScore(ctx, k[2], &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(idleBy.UnixMilli(), 10)}))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: redis list due tenants: %w", err)
	}
	ids := []string{}
	for _, c := range cmds {
		ids = append(ids, c.Val()...)
	}
	sort.Strings(ids)
	return ids, nil
}

// ensureDueIndex indexes the tenants of the earlier single id set once per
// Redis (marker key), so tenants created before the due index existed are
// found by ListDue. Concurrent builders are harmless: indexing is
// idempotent.
func (r *Redis) ensureDueIndex(ctx context.Context) error {
	if r.dueIndexReady.Load() {
		return nil
	}
	n, err := r.client.Exists(ctx, r.indexMarker()).Result()
	if err != nil {
		return fmt.Errorf("store: redis due index: %w", err)
	}
	if n == 0 {
		var cur uint64
		for {
			ids, next, err := r.client.SScan(ctx, r.indexKey(), cur, "", 500).Result()
			if err != nil {
				return fmt.Errorf("store: redis due index: %w", err)
			}
			for _, id := range ids {
				t, err := r.Get(ctx, id)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return fmt.Errorf("store: redis due index: %w", err)
				}
				if err := r.index(ctx, t); err != nil {
					return fmt.Errorf("store: redis due index: %w", err)
				}
			}
			if next == 0 {
				break
			}
			cur = next
		}
		if err := r.client.Set(ctx, r.indexMarker(), "1", 0).Err(); err != nil {
			return fmt.Errorf("store: redis due index: %w", err)
		}
	}
	r.dueIndexReady.Store(true)
	return nil
}

var _ Counter = (*Redis)(nil)

// CountByStatus counts tenants from the index: three SCARD per shard,
// whatever the number of tenants. The first call on a Redis whose status
// sets were never built (data written by an earlier version) starts one
// background pass over every record that builds them and returns
// ErrNotCounted until it has finished.
func (r *Redis) CountByStatus(ctx context.Context) (map[Status]int, error) {
	if err := r.ensureDueIndex(ctx); err != nil { // earlier single set into the shards
		return nil, err
	}
	if !r.flaggedReady.Load() {
		n, err := r.client.Exists(ctx, r.flaggedMarker()).Result()
		if err != nil {
			return nil, fmt.Errorf("store: redis count tenants: %w", err)
		}
		if n == 0 {
			r.buildFlagged()
			return nil, ErrNotCounted
		}
		r.flaggedReady.Store(true)
	}
	cmds := make([]*redis.IntCmd, 0, 3*IndexShards)
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < IndexShards; s++ {
			k := r.shardKeys(s)
			cmds = append(cmds, p.SCard(ctx, k[0]), p.SCard(ctx, k[3]), p.SCard(ctx, k[4]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: redis count tenants: %w", err)
	}
	var all, flagged, pending int
	for i := 0; i < len(cmds); i += 3 {
		all += int(cmds[i].Val())
		flagged += int(cmds[i+1].Val())
		pending += int(cmds[i+2].Val())
	}
	return map[Status]int{StatusActive: all - flagged - pending, StatusReauthorizationRequired: flagged, StatusPending: pending}, nil
}

// buildFlagged starts, once per Store, the pass that indexes every record
// again (which fills the flagged sets) and then sets the marker. It runs
// without deadline, until done or the Store is closed.
func (r *Redis) buildFlagged() {
	if !r.flaggedBuilding.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		r.flaggedBuilding.Store(false)
		return
	}
	sub := &redisSub{cancel: cancel} // ended by Close like a subscription
	r.subs[sub] = struct{}{}
	r.subsWG.Add(1)
	r.mu.Unlock()
	go func() {
		defer func() {
			cancel()
			r.mu.Lock()
			delete(r.subs, sub)
			r.mu.Unlock()
			r.subsWG.Done()
			r.flaggedBuilding.Store(false)
		}()
		ids, err := r.allIndexed(ctx)
		for _, id := range ids {
			if err != nil {
				break
			}
			var t *Tenant
			t, err = r.Get(ctx, id)
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDecrypt) {
				err = nil
				continue
			}
			if err == nil {
				err = r.index(ctx, t)
			}
		}
		if err == nil {
			err = r.client.Set(ctx, r.flaggedMarker(), "1", 0).Err()
		}
		if err != nil {
			r.report("index", fmt.Errorf("store: redis build flagged index: %w", err))
		}
	}()
}

var _ IdentifyLister = (*Redis)(nil)

// ListIdentifyPending returns the ids of tenants whose record has a
// background identification pending (Tenant.Identify), from the index:
// one SMEMBERS per shard. It may return ids whose identification finished
// meanwhile; callers check the record.
func (r *Redis) ListIdentifyPending(ctx context.Context) ([]string, error) {
	cmds := make([]*redis.StringSliceCmd, IndexShards)
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < IndexShards; s++ {
			cmds[s] = p.SMembers(ctx, r.shardKeys(s)[5])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: redis list pending identifications: %w", err)
	}
	var ids []string
	for _, c := range cmds {
		ids = append(ids, c.Val()...)
	}
	sort.Strings(ids)
	return ids, nil
}
