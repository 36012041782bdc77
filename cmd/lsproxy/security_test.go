package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/internal/testcert"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/proxy"
	"github.com/lsproxy/lsproxy/store"
)

// serveOn runs srv (as built by newProxyServer/newControlServer) on a
// loopback port and returns its address.
func serveOn(t *testing.T, srv *http.Server) string {
	t.Helper()
	l, err := listen("127.0.0.1:0", "", "", srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); l.serve(srv) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

// TestServerSurvivesSlowloris: many connections dribbling their headers
// a byte at a time are closed after ReadHeaderTimeout, and a normal client
// is served meanwhile. Both servers as the binary builds them.
func TestServerSurvivesSlowloris(t *testing.T) {
	cfg := config.Default()
	cfg.ReadHeaderTimeout = 400 * time.Millisecond
	for name, srv := range map[string]*http.Server{
		"proxy":   newProxyServer(cfg, okHandler, nil),
		"control": newControlServer(cfg, okHandler, nil),
	} {
		t.Run(name, func(t *testing.T) {
			addr := serveOn(t, srv)
			const slow = 150
			start := time.Now()
			var wg sync.WaitGroup
			closedAfter := make(chan time.Duration, slow)
			for i := range slow {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				wg.Add(2)
				go func() { // dribble: one byte every 20 ms, never finishing the headers
					defer wg.Done()
					head := fmt.Sprintf("GET / HTTP/1.1\r\nHost: x\r\nX-Slow-%d: ", i) + strings.Repeat("a", 1000)
					for j := 0; j < len(head); j++ {
						if _, err := conn.Write([]byte{head[j]}); err != nil {
							return // closed by the server
						}
						time.Sleep(20 * time.Millisecond)
					}
				}()
				go func() { // the server must close the connection without serving it
					defer wg.Done()
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					b, err := io.ReadAll(conn)
					if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
						t.Errorf("slow connection %d not closed by the server: %v", i, err)
						return
					}
					// net/http may answer 400 or 408 before closing; never 200.
					if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") && !strings.HasPrefix(string(b), "HTTP/1.1 400") {
						t.Errorf("slow connection %d got %q", i, b)
					}
					closedAfter <- time.Since(start)
				}()
			}

			// A normal client is served while the slow connections are open.
			client := &http.Client{Timeout: 2 * time.Second}
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				t.Fatalf("normal client during slowloris: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("normal client: %d %q", resp.StatusCode, body)
			}
			wg.Wait()
			close(closedAfter)
			var latest time.Duration
			for d := range closedAfter {
				latest = max(latest, d)
			}
			// Every slow connection was cut shortly after the timeout.
			if latest > cfg.ReadHeaderTimeout+2*time.Second {
				t.Errorf("last slow connection closed after %v", latest)
			}
			// And the server still serves.
			resp, err = client.Get("http://" + addr + "/")
			if err != nil {
				t.Fatalf("after slowloris: %v", err)
			}
			resp.Body.Close()
		})
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// TestHeaderSizeLimit: a header block beyond max_header_bytes gets 431 on
// both servers; one within it is served.
func TestHeaderSizeLimit(t *testing.T) {
	cfg := config.Default()
	for name, srv := range map[string]*http.Server{
		"proxy":   newProxyServer(cfg, okHandler, nil),
		"control": newControlServer(cfg, okHandler, nil),
	} {
		t.Run(name, func(t *testing.T) {
			addr := serveOn(t, srv)
			send := func(headerBytes int) int {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				go fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nConnection: close\r\n\r\n", strings.Repeat("b", headerBytes))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("%d header bytes: %v", headerBytes, err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if got := send(cfg.MaxHeaderBytes / 2); got != 200 {
				t.Errorf("header of half the limit: %d", got)
			}
			// net/http allows 4 KiB of slack beyond MaxHeaderBytes.
			if got := send(cfg.MaxHeaderBytes + 8<<10); got != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("header over the limit: %d, want 431", got)
			}
		})
	}
}

// TestServeRefusesPublicListenWithoutClientKeys runs the command line:
// serve on 0.0.0.0 without client keys exits 1 and says how to fix it.
func TestServeRefusesPublicListenWithoutClientKeys(t *testing.T) {
	cleanEnv(t)
	base := []string{
		"client_id: cid", "client_secret: csecret", "encryption_key: " + randomKey(t),
		"data_dir: " + t.TempDir(), "control_listen: 127.0.0.1:0",
	}
	for _, tc := range []struct{ name, listen string }{
		{"all interfaces", "0.0.0.0:0"},
		{"empty host", ":0"},
		{"ipv6 any", "'[::]:0'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeYAML(t, append(base, "listen: "+tc.listen)...)
			var stdout, stderr strings.Builder
			done := make(chan int, 1)
			go func() { done <- run([]string{"serve", "--config", file}, &stdout, &stderr) }()
			var code int
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("serve started on a public address without client keys")
			}
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr %s", code, stderr.String())
			}
			msg := stderr.String()
			for _, want := range []string{"LSPROXY_LISTEN (listen) binds a non-loopback address",
				"LSPROXY_CLIENT_KEYS (client_keys)", "LSPROXY_ALLOW_UNAUTHENTICATED (allow_unauthenticated)", "hash-key"} {
				if !strings.Contains(msg, want) {
					t.Errorf("stderr lacks %q:\n%s", want, msg)
				}
			}
			if strings.Contains(msg, "csecret") {
				t.Errorf("stderr holds the client secret")
			}
		})
	}
	// The same file with a client key, or the explicit opt-out, is valid.
	_, hash, _ := proxy.NewClientKey()
	for _, extra := range []string{"client_keys: ['app:" + hash + ":*']", "allow_unauthenticated: true"} {
		file := writeYAML(t, append(base, "listen: 0.0.0.0:0", extra)...)
		var stderr strings.Builder
		if code := run([]string{"check-config", "--config", file}, io.Discard, &stderr); code != 0 {
			t.Errorf("%s: exit %d: %s", extra, code, stderr.String())
		}
	}
}

// TestRedisTLSWiring: a rediss:// URL with redis_ca_file reaches a real
// TLS redis-server; without the CA the server's certificate is rejected
// (verification is never turned off).
func TestRedisTLSWiring(t *testing.T) {
	cert := testcert.New(t)
	dir := t.TempDir()
	certFile, keyFile := cert.Write(t, dir)
	tlsPort := freePort(t)
	testredis.Start(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile,
		"--tls-key-file", keyFile, "--tls-auth-clients", "no")
	cfg := config.Default()
	cfg.RedisURL = "rediss://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0"
	cfg.RedisCAFile = certFile
	keys, _ := store.ParseKeys(randomKey(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	s, kind, err := openStore(ctx, cfg, keys, nil)
	if err != nil {
		t.Fatalf("rediss with CA: %v", err)
	}
	if kind != "redis" {
		t.Fatalf("kind %q", kind)
	}
	if _, err := s.Put(ctx, &store.Tenant{ID: "tls-ok", RefreshToken: "RT"}, 0); err != nil {
		t.Fatalf("write over TLS: %v", err)
	}
	s.Close()

	cfg.RedisCAFile = "" // system roots do not know the test CA
	_, _, err = openStore(ctx, cfg, keys, nil)
	var unknown x509.UnknownAuthorityError
	if err == nil || !(errors.As(err, &unknown) || strings.Contains(err.Error(), "certificate")) {
		t.Fatalf("rediss without the CA: %v, want a certificate error", err)
	}
	cfg.RedisCAFile = filepath.Join(dir, "none.pem")
	if _, _, err := openStore(ctx, cfg, keys, nil); err == nil {
		t.Fatal("missing CA file accepted")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
