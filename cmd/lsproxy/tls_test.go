package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/internal/testcert"
	"github.com/lsproxy/lsproxy/internal/testclock"
)

// handshake opens a new TLS connection (no session resumption: a fresh
// config each time) and returns the serial of the certificate served.
func handshake(t *testing.T, addr string, roots ...*testcert.Cert) int64 {
	t.Helper()
	cfg := &tls.Config{ServerName: "localhost", RootCAs: roots[0].Pool()}
	for _, r := range roots[1:] {
		cfg.RootCAs.AddCert(r.Cert)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// touch gives a rewritten file a distinct modification time, so the test
// does not depend on the file system's timestamp granularity.
func touch(t *testing.T, path string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestTLSListenerReloadsRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	one, two, three := testcert.New(t), testcert.New(t), testcert.New(t)
	certFile, keyFile := one.Write(t, dir)

	core, logs := observer.New(zap.InfoLevel)
	srv := newProxyServer(config.Default(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}), nil)
	l, err := listen("127.0.0.1:0", certFile, keyFile, srv, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if !l.tls || l.reloader == nil {
		t.Fatal("TLS not configured")
	}
	clock := testclock.New(time.Now())
	l.reloader.now = clock.Now // before any handshake
	done := make(chan error, 1)
	go func() { done <- l.serve(srv) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	addr := l.Addr().String()

	// Plain HTTP requests over TLS work with the first certificate.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: one.Pool(), ServerName: "localhost"}}}
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || resp.TLS == nil {
		t.Fatalf("got %q tls=%v", b, resp.TLS != nil)
	}
	if got := handshake(t, addr, one); got != one.Cert.SerialNumber.Int64() {
		t.Fatalf("serial %d, want the first certificate's", got)
	}

	// Rotate both files. Until the check interval passes, the old
	// certificate is still served; the next handshake after it sees the new one.
	mtime := time.Now().Add(time.Minute)
	two.Write(t, dir)
	touch(t, certFile, mtime)
	touch(t, keyFile, mtime)
	if got := handshake(t, addr, one, two); got != one.Cert.SerialNumber.Int64() {
		t.Fatalf("reloaded before the check interval: serial %d", got)
	}
	clock.Advance(certCheckInterval)
	if got := handshake(t, addr, one, two); got != two.Cert.SerialNumber.Int64() {
		t.Fatalf("after rotation: serial %d, want the second certificate's", got)
	}
	if logs.FilterMessage("TLS certificate reloaded").Len() != 1 {
		t.Errorf("reload not logged: %v", logs.All())
	}

	// Half a rotation (new certificate, old key) does not load: the current
	// certificate is kept and a warning logged; once the key follows, the
	// next check picks the pair up.
	writeBytes(t, certFile, three.CertPEM)
	touch(t, certFile, mtime.Add(time.Minute))
	clock.Advance(certCheckInterval)
	if got := handshake(t, addr, two, three); got != two.Cert.SerialNumber.Int64() {
		t.Fatalf("mismatched pair served: serial %d", got)
	}
	if logs.FilterMessage("TLS certificate files changed but do not load; keeping the current certificate").Len() != 1 {
		t.Errorf("bad pair not logged: %v", logs.All())
	}
	writeBytes(t, keyFile, three.KeyPEM)
	touch(t, keyFile, mtime.Add(2*time.Minute))
	clock.Advance(certCheckInterval)
	if got := handshake(t, addr, two, three); got != three.Cert.SerialNumber.Int64() {
		t.Fatalf("after completing the rotation: serial %d, want the third certificate's", got)
	}
	// Removed files: keep serving the loaded certificate.
	os.Remove(certFile)
	clock.Advance(certCheckInterval)
	if got := handshake(t, addr, three); got != three.Cert.SerialNumber.Int64() {
		t.Fatalf("after removal: serial %d", got)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message+fmtFields(e.ContextMap()), "PRIVATE KEY") {
			t.Errorf("log line holds key material: %v", e)
		}
	}
}

func fmtFields(m map[string]any) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func TestListenTLSErrors(t *testing.T) {
	dir := t.TempDir()
	c := testcert.New(t)
	certFile, keyFile := c.Write(t, dir)
	other := testcert.New(t)
	otherDir := t.TempDir()
	_, otherKey := other.Write(t, otherDir)
	for name, files := range map[string][2]string{
		"cert only":  {certFile, ""},
		"key only":   {"", keyFile},
		"missing":    {certFile + ".none", keyFile},
		"mismatched": {certFile, otherKey},
	} {
		t.Run(name, func(t *testing.T) {
			srv := &http.Server{}
			l, err := listen("127.0.0.1:0", files[0], files[1], srv, zap.NewNop())
			if err == nil {
				l.Close()
				t.Fatal("listen succeeded")
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error holds key material: %v", err)
			}
		})
	}
	// Without files: plain HTTP.
	srv := &http.Server{}
	l, err := listen("127.0.0.1:0", "", "", srv, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.tls || srv.TLSConfig != nil {
		t.Fatal("TLS configured without files")
	}
}

// TestServeTLSBothListeners runs the wired binary (build + run, as serve
// does) with TLS on the proxy and the control listener.
func TestServeTLSBothListeners(t *testing.T) {
	proxyCert, controlCert := testcert.New(t), testcert.New(t)
	pc, pk := proxyCert.Write(t, t.TempDir())
	cc, ck := controlCert.Write(t, t.TempDir())
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("upstream called for an unknown tenant")
	}))
	defer upstream.Close()

	cfg := config.Default()
	cfg.Listen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ClientID, cfg.ClientSecret = "cid", "csecret"
	cfg.EncryptionKey = randomKey(t)
	cfg.DataDir = t.TempDir()
	cfg.UpstreamURL = upstream.URL
	cfg.TLSCertFile, cfg.TLSKeyFile = pc, pk
	cfg.ControlTLSCertFile, cfg.ControlTLSKeyFile = cc, ck
	cfg.ShutdownTimeout = 5 * time.Second
	if problems := cfg.Validate(config.ModeServe); problems != nil {
		t.Fatal(problems)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := build(ctx, cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer a.store.Close()
	proxyAddr, controlAddr, runErr, err := a.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addrs := [2]string{proxyAddr, controlAddr}

	get := func(cert *testcert.Cert, url string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: cert.Pool(), ServerName: "localhost"}}}
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := get(controlCert, "https://"+addrs[1]+"/healthz", nil); resp.StatusCode != 200 {
		t.Fatalf("control healthz over TLS: %d", resp.StatusCode)
	}
	resp, body := get(proxyCert, "https://"+addrs[0]+"/x", map[string]string{"X-Tenant": "nobody"})
	if resp.StatusCode != 404 || resp.Header.Get("X-Lsproxy-Error") != "unknown_tenant" {
		t.Fatalf("proxy over TLS: %d %s", resp.StatusCode, body)
	}
	if got := handshake(t, addrs[0], proxyCert); got != proxyCert.Cert.SerialNumber.Int64() {
		t.Errorf("proxy serves certificate %d", got)
	}
	if got := handshake(t, addrs[1], controlCert); got != controlCert.Cert.SerialNumber.Int64() {
		t.Errorf("control serves certificate %d", got)
	}
	// Plain HTTP to a TLS listener gets no service.
	if resp, err := http.Get("http://" + addrs[0] + "/x"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS listener: %d", resp.StatusCode)
		}
	}

	// The healthcheck command speaks TLS to a TLS control listener.
	cleanEnv(t)
	t.Setenv("LSPROXY_CONTROL_LISTEN", addrs[1])
	t.Setenv("LSPROXY_CONTROL_TLS_CERT_FILE", cc)
	t.Setenv("LSPROXY_CONTROL_TLS_KEY_FILE", ck)
	var stderr strings.Builder
	if code := run([]string{"healthcheck"}, io.Discard, &stderr); code != 0 {
		t.Errorf("healthcheck over TLS: exit %d: %s", code, stderr.String())
	}

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
}
