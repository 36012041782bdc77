package tracing_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/tracing"
	"github.com/lsproxy/lsproxy/proxy"
	"github.com/lsproxy/lsproxy/store"
)

func TestEnabled(t *testing.T) {
	for env, want := range map[string]bool{
		"":                             false,
		"OTEL_EXPORTER_OTLP_ENDPOINT=": false,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318":                  true,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://c:4318/v1/traces": true,
	} {
		if got := tracing.Enabled([]string{env}); got != want {
			t.Errorf("%q: %v", env, got)
		}
	}
	if tracing.Enabled([]string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318", "OTEL_SDK_DISABLED=true"}) {
		t.Error("OTEL_SDK_DISABLED ignored")
	}
}

// TestSpans: a proxied request whose token must be refreshed yields the
// server span (continuing the caller's traceparent), the upstream client
// span, and the refresh spans (lock wait, token request with its HTTP
// client span, store write), all in one trace; the upstream receives the
// same trace id; no attribute carries a token, the client secret or the
// query.
func TestSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := tracing.NewProvider(nil, rec)
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(tracing.Propagator())
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		_ = tp.Shutdown(context.Background())
	})

	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries})
	var mu sync.Mutex
	var upstreamTraceparent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != emu.Paths().Token {
			mu.Lock()
			upstreamTraceparent = append(upstreamTraceparent, r.Header.Get("traceparent"))
			mu.Unlock()
		}
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	keys, _ := store.NewKeyring([]byte(strings.Repeat("k", 32)))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	g := emu.IssueGrant("acme")
	if _, err := s.Put(context.Background(), &store.Tenant{ID: "acme", Provider: "k-series", Status: store.StatusActive,
		RefreshToken: g.RefreshToken, AccessToken: g.AccessToken, AccessExpiresAt: time.Now().Add(-time.Minute), CreatedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	style, _ := auth.AuthStyleFor("basic")
	oc := &auth.OAuthClient{ClientID: emulator.DefaultClientID, ClientSecret: emulator.DefaultClientSecret, TokenURL: srv.URL + emu.Paths().Token,
		AuthStyle: style, Timeout: 5 * time.Second, HTTPClient: &http.Client{Transport: tracing.Transport(http.DefaultTransport, "token endpoint")}}
	m := auth.NewManager(s, oc, auth.ManagerOptions{})
	up, _ := url.Parse(srv.URL)
	ph := &proxy.Handler{Upstream: up, Tokens: m, Transport: tracing.Transport(proxy.NewTransport(proxy.TransportOptions{}), "upstream")}
	if err := ph.Init(); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(tracing.Handler(ph))
	t.Cleanup(front.Close)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", front.URL+"/f/data/businesses?code=hunter2-code&x=1", nil)
	req.Header.Set("X-Tenant", "acme")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	_ = tp.ForceFlush(context.Background())

	stored, _ := s.Get(context.Background(), "acme")
	secrets := []string{g.RefreshToken, g.AccessToken, stored.AccessToken, stored.RefreshToken, emulator.DefaultClientSecret, "hunter2"}
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, sp := range rec.Ended() {
		byName[sp.Name()] = sp
		if sp.SpanContext().TraceID().String() != traceID {
			t.Errorf("span %s in trace %s, want the caller's %s", sp.Name(), sp.SpanContext().TraceID(), traceID)
		}
		for _, kv := range sp.Attributes() {
			for _, sec := range secrets {
				if sec != "" && strings.Contains(kv.Value.Emit(), sec) {
					t.Errorf("span %s attribute %s carries a secret: %s", sp.Name(), kv.Key, kv.Value.Emit())
				}
			}
		}
	}
	for _, name := range []string{"proxy GET", "upstream GET", "lsproxy.refresh", "lsproxy.lock_wait", "lsproxy.token_request", "token endpoint POST", "lsproxy.store_write"} {
		if byName[name] == nil {
			t.Errorf("no span %q (have %v)", name, names(rec.Ended()))
		}
	}
	if p, c := byName["lsproxy.token_request"], byName["token endpoint POST"]; p != nil && c != nil && c.Parent().SpanID() != p.SpanContext().SpanID() {
		t.Error("the token endpoint's client span is not a child of lsproxy.token_request")
	}
	if p, c := byName["lsproxy.refresh"], byName["lsproxy.lock_wait"]; p != nil && c != nil && c.Parent().SpanID() != p.SpanContext().SpanID() {
		t.Error("lsproxy.lock_wait is not a child of lsproxy.refresh")
	}
	for _, sp := range rec.Ended() {
		for _, kv := range sp.Attributes() {
			if kv.Value.Emit() == "" {
				t.Errorf("span %s sends the empty attribute %s", sp.Name(), kv.Key)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(upstreamTraceparent) != 1 || !strings.Contains(upstreamTraceparent[0], traceID) {
		t.Errorf("upstream traceparent %q, want trace %s", upstreamTraceparent, traceID)
	}
	if sp := byName["proxy GET"]; sp != nil {
		b, _ := json.MarshalIndent(stub(sp), "", "  ")
		t.Logf("server span:\n%s", b)
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// stub is a span as an exporter shows it (for the log).
func stub(s sdktrace.ReadOnlySpan) map[string]any {
	attrs := map[string]string{}
	for _, kv := range s.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	return map[string]any{"name": s.Name(), "kind": s.SpanKind().String(), "trace_id": s.SpanContext().TraceID().String(),
		"span_id": s.SpanContext().SpanID().String(), "parent_span_id": s.Parent().SpanID().String(),
		"duration": s.EndTime().Sub(s.StartTime()).String(), "status": s.Status().Code.String(), "attributes": attrs}
}

// The control listener makes server spans with bounded names (an admin
// refresh is a trace of its own, lsproxy's spans its children), none for
// health and metrics, and never a query in an attribute.
func TestControlSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := tracing.NewProvider(nil, rec)
	prevTP := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		_ = tp.Shutdown(context.Background())
	})
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/metrics" {
			return
		}
		_, child := otel.Tracer("test").Start(r.Context(), "lsproxy.refresh")
		child.End()
	})
	srv := httptest.NewServer(tracing.ControlHandler(inner))
	t.Cleanup(srv.Close)
	for _, p := range []string{"/healthz", "/metrics", "/admin/tenants/acme/refresh", "/oauth/callback?code=hunter2-code&state=s"} {
		method := "GET"
		if strings.HasPrefix(p, "/admin/") {
			method = "POST"
		}
		req, _ := http.NewRequest(method, srv.URL+p, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	_ = tp.ForceFlush(context.Background())
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, sp := range rec.Ended() {
		byName[sp.Name()] = sp
		for _, kv := range sp.Attributes() {
			if strings.Contains(kv.Value.Emit(), "hunter2") || strings.Contains(kv.Value.Emit(), "acme") && kv.Key != "url.path" && kv.Key != "url.full" {
				t.Errorf("span %s attribute %s: %s", sp.Name(), kv.Key, kv.Value.Emit())
			}
		}
	}
	admin, callback := byName["control admin POST"], byName["control oauth callback"]
	if admin == nil || callback == nil {
		t.Fatalf("no control server spans: %v", names(rec.Ended()))
	}
	if len(rec.Ended()) != 4 { // admin + its child, callback + its child; no health or metrics spans
		t.Errorf("spans %v, want 4", names(rec.Ended()))
	}
	for _, sp := range rec.Ended() {
		if sp.Name() == "lsproxy.refresh" && sp.Parent().TraceID() != admin.SpanContext().TraceID() && sp.Parent().TraceID() != callback.SpanContext().TraceID() {
			t.Errorf("lsproxy.refresh is an orphan root")
		}
	}
}
