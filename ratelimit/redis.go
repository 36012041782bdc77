package ratelimit

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed lua/take.lua
	takeLua    string
	takeScript = redis.NewScript(takeLua)
)

// Redis is a Backend shared by every replica on one Redis (standalone,
// Sentinel or Cluster): each Take is one EVALSHA of lua/take.lua on the
// tenant's budget hash, one round trip (a lease, see lease.go, makes it one
// per batch of requests). Safe for concurrent use.
//
// Layout, with prefix P: P rl:{<tenant>} hash (bucket, window, block and
// per-caller-key fields), expiring idleTTL after the budget is full again.
// The hash tag puts it in the tenant's slot.
//
// Times come from the caller's clock (Request.Now): replicas are expected to
// run NTP-synchronised clocks, as Retry-After dates already require.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

var _ Backend = (*Redis)(nil)

// NewRedis returns a Backend on client with key prefix (e.g. "lsproxy:").
// It does not own client.
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

func (r *Redis) key(tenant string) string { return r.prefix + "rl:{" + tenant + "}" }

// Clear implements Backend (one DEL); errors wrap ErrStore.
func (r *Redis) Clear(ctx context.Context, tenant string) error {
	if err := r.client.Del(ctx, r.key(tenant)).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return nil
}

// Take implements Backend; errors wrap ErrStore.
func (r *Redis) Take(ctx context.Context, tenant string, req Request) (Decision, error) {
	args := make([]any, 0, 18)
	args = append(args, msOf(req.Now), req.Cost, req.Key, req.Share)
	if o := req.Observe; o != nil && !o.Empty() {
		blk := 0.0
		if !o.BlockUntil.IsZero() {
			blk = msOf(o.BlockUntil)
		}
		wr := 0.0
		if !o.WindowReset.IsZero() {
			wr = msOf(o.WindowReset)
		}
		args = append(args, 1, msOf(o.At), o.BucketSize, o.BucketUsed, o.DripRate, o.WindowLimit, o.WindowRemaining, wr, blk)
	} else {
		args = append(args, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	sent := 0.0
	if o := req.Observe; o != nil && o.Unpaced && !o.SentAt.IsZero() {
		sent = msOf(o.SentAt)
	}
	retWr := 0.0
	if req.Return > 0 && !req.ReturnWindow.IsZero() {
		retWr = msOf(req.ReturnWindow)
	}
	args = append(args, idleTTL.Milliseconds(), sent, req.Want, max(req.Return, 0), retWr)
	res, err := takeScript.Run(ctx, r.client, []string{r.key(tenant)}, args...).StringSlice()
	if err != nil {
		return Decision{Allowed: true}, fmt.Errorf("%w: %w", ErrStore, err)
	}
	if len(res) != 10 {
		return Decision{Allowed: true}, fmt.Errorf("%w: unexpected script answer", ErrStore)
	}
	if res[2] == "" {
		return Decision{Allowed: true}, nil
	}
	var n [10]float64
	for i := 1; i < 10; i++ {
		if n[i], err = strconv.ParseFloat(res[i], 64); err != nil {
			return Decision{Allowed: true}, fmt.Errorf("%w: unexpected script answer", ErrStore)
		}
	}
	s := budgetState{size: n[2], drip: n[3], lvl: n[4], wl: n[5], wu: n[6], wr: n[7], blk: n[8]}
	return Decision{
		Allowed: res[0] == "1",
		RetryIn: time.Duration(n[1]) * time.Millisecond,
		Budget:  s.budget(msOf(req.Now)),
		Granted: n[9],
	}, nil
}
