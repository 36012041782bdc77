package ratelimit

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// BenchmarkGovernor is the governor's cost per request (Admit + Observe of
// an answer carrying bucket headers that never fill), 1,000 tenants.
func BenchmarkGovernor(b *testing.B) {
	run := func(b *testing.B, be Backend) {
		g := &Governor{Backend: be}
		h := bucketHeader("1", "1000000000", "1000000000")
		tenants := make([]string, 1000)
		for i := range tenants {
			tenants[i] = fmt.Sprintf("tenant-%04d", i)
			g.Observe(tenants[i], 200, h)
		}
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t := tenants[i%len(tenants)]
			if err := g.Admit(r, t); err != nil {
				b.Fatal(err)
			}
			g.Observe(t, 200, h)
		}
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
	b.Run("memory", func(b *testing.B) { run(b, NewMemory()) })
	b.Run("redis", func(b *testing.B) { run(b, NewRedis(testredis.Start(b).Client(), "bench:")) })
}
