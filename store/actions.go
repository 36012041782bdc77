package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// ActionLog keeps, per tenant, the last operator actions (console and
// admin API): who did what, when, and with which result, so that a
// tenant's page tells its story beside its state changes (Tenant.History).
// Both backends implement it. It is written after the action, best effort:
// a failed write loses the entry, never the action.
//
// Methods are safe for concurrent use.
type ActionLog interface {
	// RecordAction prepends a to tenant's log, keeping MaxActions.
	RecordAction(ctx context.Context, tenant string, a Action) error
	// Actions returns up to limit of tenant's actions, newest first.
	Actions(ctx context.Context, tenant string, limit int) ([]Action, error)
}

var (
	_ ActionLog = (*Bolt)(nil)
	_ ActionLog = (*Redis)(nil)
)

// MaxActions bounds a tenant's action log.
const MaxActions = 50

// Action is one operator action on a tenant. No field holds a token, a
// link or a secret: Detail is a fixed text with at most times and counts.
type Action struct {
	At       time.Time `json:"at"`
	Operator string    `json:"operator"` // the console operator's name, or "admin-token" for the admin API
	Action   string    `json:"action"`   // authorize, refresh, retry, import, delete, ...
	Status   int       `json:"status"`   // the HTTP status it answered
	Result   string    `json:"result"`   // "ok", or the error code
	Detail   string    `json:"detail,omitempty"`
}

func validAction(tenant string, a Action) error {
	switch {
	case tenant == "" || len(tenant) > 128 || hasNUL(tenant):
		return errors.New("store: action log needs a tenant id")
	case a.Action == "" || len(a.Action) > 64 || len(a.Operator) > 128 || len(a.Result) > 64 || len(a.Detail) > 512:
		return errors.New("store: invalid action entry")
	}
	return nil
}

// Redis: P actions:{id} is a list of JSON entries, newest first, in the
// tenant's slot.
func (r *Redis) actionsKey(tenant string) string { return r.prefix + "actions:{" + tenant + "}" }

// RecordAction implements ActionLog (LPUSH and LTRIM in one transaction).
func (r *Redis) RecordAction(ctx context.Context, tenant string, a Action) error {
	if err := validAction(tenant, a); err != nil {
		return err
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	key := r.actionsKey(tenant)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, key, raw)
		p.LTrim(ctx, key, 0, MaxActions-1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: redis record action: %w", err)
	}
	return nil
}

// Actions implements ActionLog.
func (r *Redis) Actions(ctx context.Context, tenant string, limit int) ([]Action, error) {
	if limit <= 0 {
		return nil, errors.New("store: actions needs limit > 0")
	}
	raws, err := r.client.LRange(ctx, r.actionsKey(tenant), 0, int64(min(limit, MaxActions)-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis actions: %w", err)
	}
	out := make([]Action, 0, len(raws))
	for _, raw := range raws {
		var a Action
		if json.Unmarshal([]byte(raw), &a) == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// Bolt: bucket "actions" maps a tenant id to its JSON list, newest first.
var bucketActions = []byte("actions")

// RecordAction implements ActionLog.
func (b *Bolt) RecordAction(ctx context.Context, tenant string, a Action) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := validAction(tenant, a); err != nil {
		return err
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketActions)
		if err != nil {
			return err
		}
		var list []Action
		if raw := bk.Get([]byte(tenant)); raw != nil {
			_ = json.Unmarshal(raw, &list)
		}
		list = append([]Action{a}, list...)
		if len(list) > MaxActions {
			list = list[:MaxActions]
		}
		raw, err := json.Marshal(list)
		if err != nil {
			return err
		}
		return bk.Put([]byte(tenant), raw)
	})
	if err != nil {
		return fmt.Errorf("store: bolt record action: %w", err)
	}
	return nil
}

// Actions implements ActionLog.
func (b *Bolt) Actions(ctx context.Context, tenant string, limit int) ([]Action, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, errors.New("store: actions needs limit > 0")
	}
	var list []Action
	err := b.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketActions)
		if bk == nil || tenant == "" {
			return nil
		}
		if raw := bk.Get([]byte(tenant)); raw != nil {
			return json.Unmarshal(raw, &list)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt actions: %w", err)
	}
	if len(list) > limit {
		list = list[:limit]
	}
	return list, nil
}
