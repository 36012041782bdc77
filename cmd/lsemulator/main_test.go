package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe bytes.Buffer for stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-mode", "l-series", "-tenant", "demo", "-client-secret", "topsecret",
			"-redirect-url", "http://127.0.0.1:9/cb", "-control-listen", "127.0.0.1:0"}, pw, &stderr)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("no output line; stderr %s", stderr.String())
		}
		return lines.Text()
	}
	base := next()
	control, ok := strings.CutPrefix(next(), "control ")
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !ok {
		t.Fatalf("output %q / %q", base, control)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// l-series: PKCE required, tenant approved by flag.
	q := url.Values{"response_type": {"code"}, "client_id": {"emulator-client"}, "redirect_uri": {"http://127.0.0.1:9/cb"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}}
	resp, err := client.Get(base + "/resto/oauth2/v1/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: %d %v", resp.StatusCode, loc)
	}
	resp, err = client.Get(base + "/resto/anything")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API without token: %d", resp.StatusCode)
	}
	resp, err = client.Get(control + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"CodesIssued":1`) || !strings.Contains(string(b), `"APIUnauthorized":1`) {
		t.Errorf("stats %s", b)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d; stderr %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	logs := stderr.String()
	if !strings.Contains(logs, "mode=l-series") || strings.Contains(logs, "topsecret") || strings.Contains(logs, loc.Query().Get("code")) {
		t.Errorf("stderr %s", logs)
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-mode", "m-series"},
		{"-client-auth", "jwt"},
		{"-nope"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 || out.Len() != 0 {
			t.Errorf("%q: code %d, stdout %q", args, code, out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-listen", "256.0.0.1:1"}, &out, &errb); code != 1 {
		t.Errorf("bad listen address: code %d", code)
	}
}
