package main

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/internal/testcert"
)

// serveProxy serves h as serve's proxy listener does, on loopback.
func serveProxy(t *testing.T, cfg config.Config, h http.Handler) string {
	t.Helper()
	srv := newProxyServer(cfg, h, log.New(io.Discard, "", 0))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// A client trickling its body (a byte every 100 ms) is cut off once
// body_read_timeout has passed: the upstream's read of the body ends with
// an error instead of holding its connection for as long as the client
// likes.
func TestProxyBodyReadDeadline(t *testing.T) {
	upstreamDone := make(chan error, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		upstreamDone <- err
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	cfg := config.Default()
	cfg.BodyReadTimeout = 300 * time.Millisecond
	addr := serveProxy(t, cfg, httputil.NewSingleHostReverseProxy(u))

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: lsproxy\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 200 { // at most 20 s of trickling
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	}()
	select {
	case err := <-upstreamDone:
		if err == nil {
			t.Fatal("the upstream read the whole trickled body: no deadline")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the upstream was still reading a trickled body after 15 s (deadline 300 ms)")
	}
}

// A body sent at once lifts the deadline: a response streaming for longer
// than body_read_timeout arrives whole.
func TestProxyBodyDeadlineLiftedAfterBody(t *testing.T) {
	const d = 200 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || string(b) != "hello" {
			http.Error(w, "body", 400)
			return
		}
		w.WriteHeader(200)
		io.WriteString(w, "part1\n")
		http.NewResponseController(w).Flush()
		<-time.After(3 * d) // past the body's deadline: what is tested
		io.WriteString(w, "part2\n")
	})
	cfg := config.Default()
	cfg.BodyReadTimeout = d
	addr := serveProxy(t, cfg, h)
	resp, err := http.Post("http://"+addr+"/x", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "part1\npart2\n" {
		t.Fatalf("streamed answer after the body: %q, %v", b, err)
	}
	// A request without a body is not affected at all.
	resp, err = http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
}

// The control listener sends Strict-Transport-Security on TLS, never on
// plain HTTP.
func TestControlHSTSOnTLS(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := httptest.NewUnstartedServer(newControlServer(config.Default(), h, log.New(io.Discard, "", 0)).Handler)
	cert := testcert.New(t)
	pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool(), ServerName: "localhost"}}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); got != hstsValue {
		t.Errorf("TLS answer: Strict-Transport-Security %q, want %q", got, hstsValue)
	}
	plain := httptest.NewServer(newControlServer(config.Default(), h, log.New(io.Discard, "", 0)).Handler)
	defer plain.Close()
	resp, err = http.Get(plain.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); got != "" {
		t.Errorf("plain HTTP answer: Strict-Transport-Security %q", got)
	}
}
