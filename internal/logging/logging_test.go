package logging

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// lockedBuffer is a bytes.Buffer safe for the flush goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestAccessLinesWaitOthersFlushInOrder(t *testing.T) {
	var out lockedBuffer
	log, stop, err := New(&out, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	access := log.Named(AccessLogName)
	access.Info("request", zap.String("tenant", "a"))
	if s := out.String(); s != "" {
		t.Fatalf("access line written before a flush: %q", s)
	}
	log.Info("started")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"request"`) || !strings.Contains(lines[1], `"msg":"started"`) {
		t.Fatalf("want the access line then the other, got %q", lines)
	}
	access.Info("request", zap.String("tenant", "b"))
	access.Warn("request", zap.String("tenant", "c")) // warn flushes
	if n := strings.Count(out.String(), "\n"); n != 4 {
		t.Fatalf("%d lines after an access warning, want 4", n)
	}
	access.Info("request", zap.String("tenant", "d"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 5 {
		t.Fatalf("%d lines after close, want 5", n)
	}
}

func TestFlushInterval(t *testing.T) {
	var out lockedBuffer
	log, stop, err := New(&out, Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	log.Named(AccessLogName).Info("request")
	deadline := time.Now().Add(10 * time.Second)
	for out.String() == "" {
		if time.Now().After(deadline) {
			t.Fatal("access line not flushed within the interval")
		}
		time.Sleep(5 * time.Millisecond) // the flush goroutine gives no signal
	}
}

func TestFullBufferLosesNoLine(t *testing.T) {
	var out lockedBuffer
	log, stop, err := New(&out, Options{FlushInterval: time.Hour, BufferSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	access := log.Named(AccessLogName)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				access.Info("request", zap.Int("i", i), zap.String("path", "/api/items"))
			}
		}()
	}
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), `"msg":"request"`); n != writers*each {
		t.Fatalf("%d lines, want %d", n, writers*each)
	}
}

func TestLevelAndFormat(t *testing.T) {
	if _, _, err := New(&lockedBuffer{}, Options{Level: "loud"}); err == nil {
		t.Fatal("unknown level accepted")
	}
	var out lockedBuffer
	log, stop, err := New(&out, Options{Level: "warn", Format: "console"})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	_ = stop()
	if s := out.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "shown") || strings.HasPrefix(s, "{") {
		t.Fatalf("got %q", s)
	}
}

// iso8601TimeEncoder writes exactly what zap's ISO8601TimeEncoder writes,
// across seconds, zones and a DST change.
func TestISO8601TimeEncoderMatchesZap(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("plus", 5*3600+1800), time.FixedZone("minus", -7*3600)}
	if l, err := time.LoadLocation("Europe/Amsterdam"); err == nil {
		zones = append(zones, l)
	}
	base := time.Date(2026, 3, 29, 0, 59, 58, 0, time.UTC) // the European DST change is at 01:00 UTC
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20000; i++ {
		loc := zones[rng.IntN(len(zones))]
		tm := base.Add(time.Duration(rng.Int64N(int64(5 * time.Second)))).In(loc)
		if rng.IntN(10) == 0 {
			tm = base.Add(time.Duration(rng.Int64N(int64(400 * 24 * time.Hour)))).In(loc)
		}
		got, want := zapcore.NewMapObjectEncoder(), zapcore.NewMapObjectEncoder()
		_ = got.AddArray("t", zapcore.ArrayMarshalerFunc(func(a zapcore.ArrayEncoder) error { iso8601TimeEncoder(tm, a); return nil }))
		_ = want.AddArray("t", zapcore.ArrayMarshalerFunc(func(a zapcore.ArrayEncoder) error { zapcore.ISO8601TimeEncoder(tm, a); return nil }))
		g, w := fmt.Sprint(got.Fields["t"]), fmt.Sprint(want.Fields["t"])
		if g != w {
			t.Fatalf("%v: got %s, zap writes %s", tm, g, w)
		}
	}
}
