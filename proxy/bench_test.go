package proxy_test

// Hot-path benchmarks: proxy.Handler against a bare httputil.ReverseProxy
// that sets a static Authorization header, both in front of the same fake
// upstream transport (no network), so the difference is lsproxy's own work:
// tenant lookup, token injection, header hygiene, status capture, metrics.
//
//	go test -run '^$' -bench . -benchmem ./proxy
//
// The Manager cases use the real auth.Manager over the real embedded store
// with a warm cache; "store-gets/op" counts store reads per request (0 in
// steady state).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/logging"
	"github.com/lsproxy/lsproxy/proxy"
	"github.com/lsproxy/lsproxy/store"
)

// benchBody is a realistic ~2 KiB JSON answer.
var benchBody = func() []byte {
	var b strings.Builder
	b.WriteString(`{"businessLocationId":45454565682155,"items":[`)
	for i := 0; i < 11; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"sku":"SKU-%05d","name":"Flat white %d oz","price":%.2f,"currency":"EUR","category":"hot-drinks","active":true,"modifiedAt":"2025-11-10T09:30:00.000Z"}`,
			700100200300+i, 4200+i, 8+i, 3.5+float64(i)/4)
	}
	b.WriteString(`],"page":{"number":1,"size":11,"totalElements":173,"totalPages":18}}`)
	return []byte(b.String())
}()

// fakeUpstream answers every request with benchBody, without network I/O.
// It counts requests that do not carry exactly one bearer token.
type fakeUpstream struct {
	contentLength string
	unauthorized  atomic.Int64
}

func (f *fakeUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if a := r.Header["Authorization"]; len(a) != 1 || !strings.HasPrefix(a[0], "Bearer ") {
		f.unauthorized.Add(1)
	}
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}, "Content-Length": {f.contentLength}},
		Body:          io.NopCloser(bytes.NewReader(benchBody)),
		ContentLength: int64(len(benchBody)),
		Request:       r,
	}, nil
}

// discardWriter is a reusable ResponseWriter that keeps nothing.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(b)
	return len(b), nil
}
func (w *discardWriter) Flush() {}

func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// bufferPool recycles copy buffers like proxy.Handler does.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufferPool) Get() []byte  { return *(copyBuffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// countingStore is the real store, counting reads.
type countingStore struct {
	store.Store
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, id string) (*store.Tenant, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

// staticTokens is a TokenSource with one fixed token: the Handler without
// the Manager.
type staticTokens struct{ tok auth.Token }

func (s staticTokens) Token(context.Context, string) (auth.Token, error)           { return s.tok, nil }
func (s staticTokens) Recover(context.Context, string, string) (auth.Token, error) { return s.tok, nil }

func benchTenant(i int) string { return fmt.Sprintf("t%05d", i) }

// storeSet holds one filled embedded store per tenant count, created in a
// top-level benchmark's temporary directory and shared by its sub-benchmarks
// (filling 10,000 tenants takes seconds; RunParallel calls its function
// several times).
type storeSet struct {
	dir string
	m   map[int]*countingStore
}

func newStoreSet(b *testing.B) *storeSet {
	return &storeSet{dir: b.TempDir(), m: map[int]*countingStore{}}
}

func (ss *storeSet) filled(b *testing.B, n int) *countingStore {
	if s := ss.m[n]; s != nil {
		return s
	}
	keys, err := store.NewKeyring(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		b.Fatal(err)
	}
	s, err := store.OpenBolt(filepath.Join(ss.dir, strconv.Itoa(n)), keys)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		id := benchTenant(i)
		rec := &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: "at-" + id + "-0123456789abcdef0123456789",
			RefreshToken: "rt-" + id, AccessExpiresAt: now.Add(24 * time.Hour), CreatedAt: now}
		if _, err := s.Put(context.Background(), rec, 0); err != nil {
			b.Fatal(err)
		}
	}
	cs := &countingStore{Store: s}
	ss.m[n] = cs
	return cs
}

func (ss *storeSet) close() {
	for _, s := range ss.m {
		s.Close()
	}
}

// newManager returns a Manager over a filled store with every tenant cached.
func newManager(b *testing.B, ss *storeSet, n int) (*auth.Manager, *countingStore) {
	s := ss.filled(b, n)
	m := auth.NewManager(s, nil, auth.ManagerOptions{})
	for i := range n {
		if _, err := m.Token(context.Background(), benchTenant(i)); err != nil {
			b.Fatal(err)
		}
	}
	return m, s
}

// productionLogger is what serve builds with LSPROXY_LOG_LEVEL=warn: request
// lines (info) are checked and dropped.
func productionLogger() *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.WarnLevel)
	return zap.New(core)
}

type benchCase struct {
	name    string
	tenants int
	build   func(b *testing.B, ss *storeSet, up *fakeUpstream) (http.Handler, *countingStore)
}

var upstreamURL = &url.URL{Scheme: "http", Host: "upstream.invalid", Path: "/api"}

func bareProxy(flush time.Duration) func(*testing.B, *storeSet, *fakeUpstream) (http.Handler, *countingStore) {
	return func(_ *testing.B, _ *storeSet, up *fakeUpstream) (http.Handler, *countingStore) {
		return &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(upstreamURL)
				pr.Out.Host = ""
				pr.Out.Header.Del("X-Tenant")
				pr.Out.Header.Set("Authorization", "Bearer static-token-0123456789abcdef0123456789")
			},
			Transport:     up,
			BufferPool:    bufferPool{},
			FlushInterval: flush,
		}, nil
	}
}

func handler(b *testing.B, up *fakeUpstream, tokens proxy.TokenSource, metrics bool) http.Handler {
	return handlerLogged(b, up, tokens, metrics, productionLogger())
}

func handlerLogged(b *testing.B, up *fakeUpstream, tokens proxy.TokenSource, metrics bool, log *zap.Logger) http.Handler {
	h := &proxy.Handler{Upstream: upstreamURL, Tokens: tokens, Transport: up, Logger: log}
	if metrics {
		h.Metrics = proxy.NewMetrics(prometheus.NewRegistry())
	}
	if err := h.Init(); err != nil {
		b.Fatal(err)
	}
	return h
}

func withManager(n int) func(*testing.B, *storeSet, *fakeUpstream) (http.Handler, *countingStore) {
	return func(b *testing.B, ss *storeSet, up *fakeUpstream) (http.Handler, *countingStore) {
		m, s := newManager(b, ss, n)
		return handler(b, up, m, true), s
	}
}

// withManagerAccessLog is withManager with the default configuration's
// logger: info level, one access line per request, buffered (to a discarding
// writer, so the encoding and buffering are measured, not the terminal).
func withManagerAccessLog(n int) func(*testing.B, *storeSet, *fakeUpstream) (http.Handler, *countingStore) {
	return func(b *testing.B, ss *storeSet, up *fakeUpstream) (http.Handler, *countingStore) {
		m, s := newManager(b, ss, n)
		log, stop, err := logging.New(io.Discard, logging.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = stop() })
		return handlerLogged(b, up, m, true, log.Named(logging.AccessLogName)), s
	}
}

var benchCases = []benchCase{
	{"bare-ReverseProxy-10-tenants", 10, bareProxy(0)},
	{"bare-ReverseProxy-10000-tenants", 10000, bareProxy(0)},
	{"bare-ReverseProxy-FlushInterval-1", 10, bareProxy(-1)},
	{"Handler-static-token-no-metrics", 10, func(b *testing.B, _ *storeSet, up *fakeUpstream) (http.Handler, *countingStore) {
		return handler(b, up, staticTokens{auth.Token{AccessToken: "static-token-0123456789abcdef0123456789", Expiry: time.Now().Add(time.Hour)}}, false), nil
	}},
	{"Handler-Manager-10-tenants", 10, withManager(10)},
	{"Handler-Manager-10000-tenants", 10000, withManager(10000)},
	{"Handler-Manager-10000-tenants-access-log", 10000, withManagerAccessLog(10000)},
}

func requests(n int) []*http.Request {
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r := httptest.NewRequest(http.MethodGet, "http://lsproxy.local/f/data/businesses?page=1", nil)
		r.Header.Set("X-Tenant", benchTenant(i))
		r.Header.Set("Accept", "application/json")
		r.Header.Set("User-Agent", "bench/1")
		reqs[i] = r
	}
	return reqs
}

func report(b *testing.B, up *fakeUpstream, s *countingStore, gets0 int64, ops int) {
	if n := up.unauthorized.Load(); n > 0 {
		b.Fatalf("%d upstream requests without one bearer token", n)
	}
	if s != nil && ops > 0 {
		b.ReportMetric(float64(s.gets.Load()-gets0)/float64(ops), "store-gets/op")
	}
}

// BenchmarkProxy serves requests one at a time, tenants round-robin.
func BenchmarkProxy(b *testing.B) {
	ss := newStoreSet(b)
	defer ss.close()
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			up := &fakeUpstream{contentLength: strconv.Itoa(len(benchBody))}
			h, s := c.build(b, ss, up)
			reqs := requests(c.tenants)
			w := &discardWriter{h: http.Header{}}
			var gets0 int64
			if s != nil {
				gets0 = s.gets.Load()
			}
			ops := 0
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				h.ServeHTTP(w, reqs[ops%len(reqs)])
				if w.status != http.StatusOK || w.n != len(benchBody) {
					b.Fatalf("status %d, %d body bytes", w.status, w.n)
				}
				ops++
			}
			report(b, up, s, gets0, ops)
		})
	}
}

// BenchmarkProxyParallel serves from GOMAXPROCS goroutines at once, which
// shows contention (the Manager's cache lock, metrics).
func BenchmarkProxyParallel(b *testing.B) {
	ss := newStoreSet(b)
	defer ss.close()
	for _, c := range benchCases {
		if strings.Contains(c.name, "FlushInterval") || strings.Contains(c.name, "static") {
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			up := &fakeUpstream{contentLength: strconv.Itoa(len(benchBody))}
			h, s := c.build(b, ss, up)
			reqs := requests(c.tenants)
			var gets0 int64
			if s != nil {
				gets0 = s.gets.Load()
			}
			var next, ops atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					w.reset()
					h.ServeHTTP(w, reqs[int(next.Add(1))%len(reqs)])
					if w.status != http.StatusOK {
						b.Errorf("status %d", w.status)
						return
					}
					ops.Add(1)
				}
			})
			report(b, up, s, gets0, int(ops.Load()))
		})
	}
}
