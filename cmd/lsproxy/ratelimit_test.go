package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/ratelimit"
)

func TestNewGovernor(t *testing.T) {
	off, on := false, true
	rs := auth.Presets["r-series"]
	xs := auth.Presets["x-series"]
	for _, tc := range []struct {
		name    string
		preset  auth.Preset
		mod     func(*config.Config)
		wantNil bool
		check   func(t *testing.T, g *ratelimit.Governor)
	}{
		{"default on, preset costs", rs, nil, false, func(t *testing.T, g *ratelimit.Governor) {
			if g.Costs.Of("GET") != 1 || g.Costs.Of("POST") != 10 || g.Wait.String() != "1s" {
				t.Errorf("costs %v wait %v", g.Costs, g.Wait)
			}
			if _, ok := g.Backend.(*ratelimit.Memory); !ok {
				t.Errorf("backend %T, want Memory without Redis", g.Backend)
			}
		}},
		{"x-series counts requests", xs, nil, false, func(t *testing.T, g *ratelimit.Governor) {
			if g.Costs.Of("POST") != 1 {
				t.Errorf("x-series POST cost %v", g.Costs.Of("POST"))
			}
		}},
		{"config off", rs, func(c *config.Config) { c.RateLimit = &off }, true, nil},
		{"preset opts out", auth.Preset{NoRateLimit: true}, nil, true, nil},
		{"config overrides an opt-out", auth.Preset{NoRateLimit: true}, func(c *config.Config) { c.RateLimit = &on }, false, nil},
		{"costs and share from config", rs, func(c *config.Config) { c.RateLimitCosts = "GET=2,*=3"; c.RateLimitKeyShare = 0.5 }, false, func(t *testing.T, g *ratelimit.Governor) {
			if g.Costs.Of("GET") != 2 || g.Costs.Of("PATCH") != 3 || g.KeyShare != 0.5 {
				t.Errorf("costs %v share %v", g.Costs, g.KeyShare)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			g, err := newGovernor(cfg, tc.preset, nil, zap.NewNop(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if (g == nil) != tc.wantNil {
				t.Fatalf("governor = %v, want nil %v", g, tc.wantNil)
			}
			if tc.check != nil {
				tc.check(t, g)
			}
		})
	}
	cfg := config.Default()
	cfg.RateLimitCosts = "nonsense"
	if _, err := newGovernor(cfg, rs, nil, zap.NewNop(), prometheus.NewRegistry()); err == nil {
		t.Fatal("bad costs accepted")
	}
}
