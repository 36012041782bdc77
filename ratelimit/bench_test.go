package ratelimit

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// cmdCounter is a go-redis hook counting the commands sent (round trips;
// a pipeline counts each command).
type cmdCounter struct{ n atomic.Int64 }

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// BenchmarkGovernor is the governor's cost per request (Admit + Observe of
// an answer carrying bucket headers that never fill): 1,000 tenants taken
// in turn, and one busy tenant on every core. storecmds/op is the store
// round trips per request (Redis commands, or Memory steps).
func BenchmarkGovernor(b *testing.B) {
	h := bucketHeader("1", "1000000000", "1000000000")
	run := func(b *testing.B, be Backend, cmds func() int64) {
		g := &Governor{Backend: be}
		tenants := make([]string, 1000)
		for i := range tenants {
			tenants[i] = fmt.Sprintf("tenant-%04d", i)
			g.Observe(tenants[i], 200, h)
		}
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		before := cmds()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t := tenants[i%len(tenants)]
			if err := g.Admit(r, t); err != nil {
				b.Fatal(err)
			}
			g.Observe(t, 200, h)
		}
		b.ReportMetric(float64(cmds()-before)/float64(b.N), "storecmds/op")
	}
	busy := func(b *testing.B, be Backend, cmds func() int64) {
		g := &Governor{Backend: be}
		g.Observe("busy", 200, h)
		before := cmds()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
			for pb.Next() {
				if err := g.Admit(r, "busy"); err != nil {
					b.Error(err)
					return
				}
				g.Observe("busy", 200, h)
			}
		})
		b.ReportMetric(float64(cmds()-before)/float64(b.N), "storecmds/op")
	}
	memory := func() (Backend, func() int64) {
		cb := &countingBackend{Backend: NewMemory()}
		return cb, cb.n.Load
	}
	redisBackend := func(b *testing.B) (Backend, func() int64) {
		c := testredis.Start(b).Client()
		var cc cmdCounter
		c.AddHook(&cc)
		return NewRedis(c, "bench:"), cc.n.Load
	}
	b.Run("ungoverned", func(b *testing.B) {
		g := &Governor{Backend: NewMemory()}
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		h := http.Header{"Content-Type": {"application/json"}}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = g.Admit(r, "t")
			g.Observe("t", 200, h)
		}
	})
	b.Run("memory", func(b *testing.B) { be, n := memory(); run(b, be, n) })
	b.Run("redis", func(b *testing.B) { be, n := redisBackend(b); run(b, be, n) })
	b.Run("memory-busy", func(b *testing.B) { be, n := memory(); busy(b, be, n) })
	b.Run("redis-busy", func(b *testing.B) { be, n := redisBackend(b); busy(b, be, n) })
}
