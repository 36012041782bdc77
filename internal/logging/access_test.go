package logging

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// zapAccess logs e through zap with the fields AccessLog writes, in its
// order: the reference AccessLog must match byte for byte.
func zapAccess(lg *zap.Logger, msg string, e *Access) {
	if ce := lg.Check(zap.InfoLevel, msg); ce != nil {
		ce.Time = e.Time
		ce.Write(
			zap.String("tenant", e.Tenant),
			zap.String("method", e.Method),
			zap.String("path", e.Path),
			zap.Int("status", e.Status),
			zap.Duration("latency", e.Latency),
			zap.Duration("upstream_latency", e.UpstreamLatency),
			zap.String("error", e.Error),
			zap.Bool("replayed", e.Replayed),
			zap.String("request_id", e.RequestID),
			zap.String("caller", e.Caller),
		)
	}
}

func randomString(r *rand.Rand) string {
	alphabet := []string{"a", "Z", "0", "/", " ", "\"", "\\", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
		"é", "✓", "😀", "\u2028", "\xff", "\xc3", "\xe2\x9c", "%2F", "<", "&"}
	var sb strings.Builder
	for range r.IntN(12) {
		sb.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return sb.String()
}

func TestAccessLogMatchesZap(t *testing.T) {
	var fast, ref lockedBuffer
	fl, stopFast, err := New(&fast, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rl, stopRef, err := New(&ref, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 12, 2, 7, 8, 9, 0, time.UTC)
	zones := []*time.Location{time.UTC, time.FixedZone("x", -5*3600-30*60), time.Local}
	durations := []time.Duration{0, 1, 999, time.Microsecond, 1500 * time.Microsecond, 2*time.Hour + 3, -time.Millisecond,
		1e15 - 1, 1e15, 1<<63 - 1 - 1e9}
	for _, name := range []string{AccessLogName, "other", "we\"ird\n"} {
		a := NewAccessLog(fl.Named(name), "request")
		if a == nil {
			t.Fatalf("no AccessLog for a JSON logger named %q", name)
		}
		for i := range 2000 {
			e := &Access{
				Time:    base.Add(time.Duration(r.Int64N(int64(48 * time.Hour)))).In(zones[i%len(zones)]),
				Tenant:  randomString(r),
				Method:  randomString(r),
				Path:    randomString(r),
				Status:  r.IntN(1000) - 1,
				Latency: durations[r.IntN(len(durations))] + time.Duration(r.Int64N(1e9)>>r.IntN(30)),
				// Every magnitude up to past the integer formatting's 1e15 ns.
				UpstreamLatency: time.Duration(r.Int64N(2e15) >> r.IntN(50)),
				Error:           randomString(r),
				Replayed:        r.IntN(2) == 0,
				RequestID:       randomString(r),
				Caller:          randomString(r),
			}
			a.Write(e)
			zapAccess(rl.Named(name), "request", e)
		}
	}
	if err := stopFast(); err != nil {
		t.Fatal(err)
	}
	if err := stopRef(); err != nil {
		t.Fatal(err)
	}
	got, want := strings.Split(fast.String(), "\n"), strings.Split(ref.String(), "\n")
	if len(got) != len(want) || len(got) != 3*2000+1 {
		t.Fatalf("%d lines, zap wrote %d (want %d)", len(got), len(want), 3*2000+1)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("line %d differs from zap's:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

func TestAccessLogFlushesAsZap(t *testing.T) {
	var out lockedBuffer
	lg, stop, err := New(&out, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	e := &Access{Time: time.Now(), Tenant: "acme", Status: 200}
	NewAccessLog(lg.Named(AccessLogName), "request").Write(e)
	if s := out.String(); s != "" {
		t.Fatalf("access line written before a flush: %q", s)
	}
	NewAccessLog(lg.Named("other"), "request").Write(e) // not the access log: flushed at once
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Fatalf("%d lines after a line of another logger, want 2 (order kept)", n)
	}
}

func TestNewAccessLogOnlyForPlainJSON(t *testing.T) {
	var out lockedBuffer
	for name, lg := range map[string]*zap.Logger{
		"nop":     zap.NewNop(),
		"console": must(New(&out, Options{Format: "console"})),
		"warn":    must(New(&out, Options{Level: "warn"})),
		"with":    must(New(&out, Options{})).With(zap.String("k", "v")),
	} {
		if NewAccessLog(lg, "request") != nil {
			t.Errorf("%s: AccessLog would bypass what zap does for this logger", name)
		}
	}
}

func must(lg *zap.Logger, _ func() error, err error) *zap.Logger {
	if err != nil {
		panic(err)
	}
	return lg
}

func BenchmarkAccessLine(b *testing.B) {
	lg, stop, err := New(discard{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	lg = lg.Named(AccessLogName)
	e := &Access{Time: time.Now(), Tenant: "t01234", Method: "GET", Path: "/API/Account/123/Item.json",
		Status: 200, Latency: 1234567, UpstreamLatency: 1200000, RequestID: "0123456789abcdef"}
	b.Run("zap", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			zapAccess(lg, "request", e)
		}
	})
	b.Run("AccessLog", func(b *testing.B) {
		a := NewAccessLog(lg, "request")
		b.ReportAllocs()
		for b.Loop() {
			a.Write(e)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
