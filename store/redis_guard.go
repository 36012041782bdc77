package store

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ GuardState = (*Redis)(nil)

var (
	//go:embed lua/guard.lua
	guardLua    string
	guardScript = redis.NewScript(guardLua)
)

// guardKeys are the guard's keys of scope S (lua/guard.lua), all in the
// slot of the hash tag {guard}:
//
//	P guard:{guard}:S:state      hash: tripped, trips, last_new
//	P guard:{guard}:S:rejected   zset: tenants rejected within the window
//	P guard:{guard}:S:flags      hash + P guard:{guard}:S:flagsz zset: revertible flags
//	P guard:{guard}:reverts      hash: reverts not done yet (every scope's)
//	P guard:{guard}:S:acquitted  zset: tenants held by a trip that cleared
//
// A scope's keys expire two windows after its last change.
func (r *Redis) guardKeys(scope string) []string {
	p := r.prefix + "guard:{guard}:"
	sp := p + "s:" + scope + ":"
	return []string{sp + "state", sp + "rejected", sp + "flags", sp + "flagsz", p + "reverts", sp + "acquitted"}
}

func (r *Redis) guardRun(ctx context.Context, op, tenant string, now time.Time, p GuardParams, at time.Time, trips uint64) (any, error) {
	if !validGuardScope(p.Scope) {
		return nil, fmt.Errorf("store: invalid guard scope %q", p.Scope)
	}
	renew := "0"
	if p.Renew {
		renew = "1"
	}
	var atNs, atMs string
	if !at.IsZero() {
		atNs, atMs = strconv.FormatInt(at.UnixNano(), 10), strconv.FormatInt(at.UnixMilli(), 10)
	}
	probe := "0"
	if p.Probe {
		probe = "1"
	}
	res, err := guardScript.Run(ctx, r.client, r.guardKeys(p.Scope), op, tenant, now.UnixMilli(), p.Window.Milliseconds(),
		p.Threshold, renew, atNs, atMs, strconv.FormatUint(trips, 10), MaxGuardReverts, probe, GuardProbeEvery.Milliseconds()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis guard %s: %w", op, err)
	}
	return res, nil
}

// GuardReject implements GuardState.
func (r *Redis) GuardReject(ctx context.Context, tenant string, now time.Time, p GuardParams) (GuardVerdict, error) {
	res, err := r.guardRun(ctx, "reject", tenant, now, p, time.Time{}, 0)
	if err != nil {
		return GuardVerdict{}, err
	}
	v, ok := res.([]any)
	if !ok || len(v) != 5 {
		return GuardVerdict{}, fmt.Errorf("store: redis guard reject: unexpected reply %v", res)
	}
	return GuardVerdict{Flag: luaInt(v[0]) == 1, Tripped: luaInt(v[1]) == 1, Changed: luaInt(v[2]) == 1,
		Tenants: int(luaInt(v[3])), Trips: uint64(luaInt(v[4]))}, nil
}

// GuardFlagged implements GuardState.
func (r *Redis) GuardFlagged(ctx context.Context, tenant string, at time.Time, trips uint64, p GuardParams) (bool, error) {
	res, err := r.guardRun(ctx, "flagged", tenant, at, p, at, trips)
	if err != nil {
		return false, err
	}
	return luaInt(res) == 1, nil
}

// GuardStatus implements GuardState.
func (r *Redis) GuardStatus(ctx context.Context, tenant string, now time.Time, p GuardParams) (GuardStatus, error) {
	res, err := r.guardRun(ctx, "status", tenant, now, p, time.Time{}, 0)
	if err != nil {
		return GuardStatus{}, err
	}
	v, ok := res.([]any)
	if !ok || len(v) < 9 || (len(v)-9)%2 != 0 {
		return GuardStatus{}, fmt.Errorf("store: redis guard status: unexpected reply %v", res)
	}
	s := GuardStatus{Tripped: luaInt(v[0]) == 1, Changed: luaInt(v[1]) == 1, Tenants: int(luaInt(v[2])),
		Trips: uint64(luaInt(v[3])), Held: luaInt(v[4]) == 1, Pending: int(luaInt(v[7])), Acquitted: int(luaInt(v[8]))}
	if s.Held {
		s.HeldSince = time.UnixMilli(luaInt(v[5]))
	}
	if ns, _ := v[6].(string); ns != "" {
		s.Revert = nsTime(ns)
	}
	for i := 9; i+1 < len(v); i += 2 {
		id, _ := v[i].(string)
		ns, _ := v[i+1].(string)
		s.Reverts = append(s.Reverts, GuardRevert{Tenant: id, FlaggedAt: nsTime(ns)})
	}
	return s, nil
}

// GuardReverted implements GuardState.
func (r *Redis) GuardReverted(ctx context.Context, tenant string, at time.Time) error {
	_, err := r.guardRun(ctx, "reverted", tenant, at, GuardParams{}, at, 0)
	return err
}

// GuardGranted implements GuardState.
func (r *Redis) GuardGranted(ctx context.Context, tenant string, now time.Time, p GuardParams) error {
	_, err := r.guardRun(ctx, "granted", tenant, now, p, time.Time{}, 0)
	return err
}

func luaInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

func nsTime(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}
