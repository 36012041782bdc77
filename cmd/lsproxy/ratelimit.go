package main

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// newGovernor builds the rate-limit governor, or nil when it is off
// (LSPROXY_RATE_LIMIT=false, or the preset opts out). Budgets live next to
// the tenants: in Redis when the store is Redis, else in process.
func newGovernor(cfg config.Config, preset auth.Preset, s store.Store, log *zap.Logger, reg prometheus.Registerer) (*ratelimit.Governor, error) {
	on := !preset.NoRateLimit
	if cfg.RateLimit != nil {
		on = *cfg.RateLimit
	}
	if !on {
		log.Info("rate-limit governor off")
		return nil, nil
	}
	costs := ratelimit.Costs(preset.RateCosts)
	if cfg.RateLimitCosts != "" {
		c, err := ratelimit.ParseCosts(cfg.RateLimitCosts)
		if err != nil {
			return nil, err
		}
		costs = c
	}
	var backend ratelimit.Backend = ratelimit.NewMemory()
	if rs, ok := s.(*store.Redis); ok {
		backend = ratelimit.NewRedis(rs.Client(), rs.Prefix())
	}
	// Store failures fail open; say so at most every 10 s, not per request.
	var lastLog atomic.Int64
	return &ratelimit.Governor{
		Backend:  backend,
		Wait:     cfg.RateLimitWait,
		MaxBlock: cfg.RateLimitMaxBlock,
		Costs:    costs,
		KeyShare: cfg.RateLimitKeyShare,
		Metrics:  ratelimit.NewMetrics(reg),
		OnError: func(tenant string, err error) {
			now := time.Now().UnixNano()
			if last := lastLog.Load(); now-last > int64(10*time.Second) && lastLog.CompareAndSwap(last, now) {
				log.Warn("rate-limit store unavailable; sending requests unpaced", zap.String("tenant", tenant), zap.Error(err))
			}
		},
	}, nil
}
