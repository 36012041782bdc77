package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// signalBuffer is a concurrency-safe writer that closes ready once the
// output holds marker.
type signalBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	marker string
	ready  chan struct{}
	once   sync.Once
}

func (s *signalBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if strings.Contains(s.b.String(), s.marker) {
		s.once.Do(func() { close(s.ready) })
	}
	return n, err
}

func (s *signalBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lsproxy dev honours the admin token, data directory and encryption key
// the user set and OTEL_EXPORTER_OTLP_ENDPOINT, prints the export line for
// the tenants commands, and `tenants export` reads its store once it
// stopped.
func TestDevHonoursUserSettings(t *testing.T) {
	cleanEnv(t)
	var spans atomic.Int64
	otlp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			spans.Add(1)
		}
		io.Copy(io.Discard, r.Body)
	}))
	defer otlp.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	dir := t.TempDir()
	key := randomKey(t)
	const token = "my-own-dev-admin-token"
	t.Setenv("LSPROXY_ADMIN_TOKEN", token)
	t.Setenv("LSPROXY_DATA_DIR", dir)
	t.Setenv("LSPROXY_ENCRYPTION_KEY", key)

	out := &signalBuffer{marker: "Press Ctrl-C", ready: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dev(ctx, "127.0.0.1:0", "127.0.0.1:0", out, io.Discard) }()
	select {
	case <-out.ready:
	case err := <-done:
		t.Fatalf("dev ended: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("dev printed no banner in 30 s:\n%s", out.String())
	}
	m := regexp.MustCompile(`(?m)^  export LSPROXY_ADMIN_URL=(http://\S+) LSPROXY_ADMIN_TOKEN=(\S+)$`).FindStringSubmatch(out.String())
	if m == nil || m[2] != token {
		t.Fatalf("no export line with the user's admin token:\n%s", out.String())
	}
	req, _ := http.NewRequest("GET", m[1]+"/admin/tenants/demo", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin API with the user's token: %d", resp.StatusCode)
	}
	if !strings.Contains(out.String(), "Tracing: on") || !strings.Contains(out.String(), "lsproxy tenants export") {
		t.Errorf("banner lacks tracing or export:\n%s", out.String())
	}
	if strings.Contains(out.String(), key) {
		t.Errorf("the banner echoes the encryption key the user set:\n%s", out.String())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30 s")
	}
	if spans.Load() == 0 {
		t.Error("no span reached OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if _, err := os.Stat(filepath.Join(dir, "lsproxy.db")); err != nil {
		t.Fatalf("the user's data directory was not kept: %v", err)
	}
	outFile := filepath.Join(t.TempDir(), "tenants.ndjson")
	var errs bytes.Buffer
	if code := tenantsExport(context.Background(), []string{outFile}, io.Discard, &errs); code != 0 {
		t.Fatalf("tenants export of the stopped sandbox: exit %d %s", code, errs.String())
	}
	b, _ := os.ReadFile(outFile)
	if !strings.Contains(string(b), `"id":"demo"`) {
		t.Fatalf("export lacks the demo tenant: %s", b)
	}
}
