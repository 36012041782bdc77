package auth

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestNewTokenTransport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want time.Duration
	}{{0, DefaultTokenTimeout}, {-time.Second, DefaultTokenTimeout}, {3 * time.Second, 3 * time.Second}} {
		tr := NewTokenTransport(tc.in)
		if tr.Proxy != nil {
			t.Error("token transport uses a proxy from the environment")
		}
		if tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion < tls.VersionTLS12 || tr.TLSClientConfig.InsecureSkipVerify {
			t.Errorf("TLS config %+v: want verification and TLS 1.2+", tr.TLSClientConfig)
		}
		if tr.ResponseHeaderTimeout != tc.want {
			t.Errorf("NewTokenTransport(%v).ResponseHeaderTimeout = %v, want %v", tc.in, tr.ResponseHeaderTimeout, tc.want)
		}
	}
	if defaultTokenTransport() != defaultTokenTransport() {
		t.Error("default token transport is not shared")
	}
}

// A token endpoint that accepts the request but never answers fails the
// request after the response-header timeout.
func TestTokenTransportGivesUpOnSilentEndpoint(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	client := &http.Client{Transport: NewTokenTransport(100 * time.Millisecond)}
	start := time.Now()
	resp, err := client.Post(srv.URL, "application/x-www-form-urlencoded", nil)
	if err == nil {
		resp.Body.Close()
		t.Fatal("no error from a silent token endpoint")
	}
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		t.Errorf("error %v is not a timeout", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("gave up after %v", el)
	}
}
