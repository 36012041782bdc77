package auth

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// tokenIdleConns is how many idle connections to the token endpoint are
// kept: refreshes are rare and serialised per tenant, so a few suffice.
const tokenIdleConns = 16

// NewTokenTransport returns the transport for token requests (the
// OAuthClient's HTTPClient): it carries the client secret and refresh
// tokens, so it never uses an environment proxy, verifies TLS (1.2 or
// later), and gives up on a token endpoint that accepts the connection but
// does not answer within responseHeaderTimeout (0 = DefaultTokenTimeout).
// The data plane has its own (proxy.NewTransport), tuned for many
// concurrent requests to one upstream.
func NewTokenTransport(responseHeaderTimeout time.Duration) *http.Transport {
	if responseHeaderTimeout <= 0 {
		responseHeaderTimeout = DefaultTokenTimeout
	}
	return &http.Transport{
		Proxy:                 nil, // secrets go to the token endpoint directly
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   tokenIdleConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
	}
}

// defaultTokenTransport serves OAuthClients without an HTTPClient.
var defaultTokenTransport = sync.OnceValue(func() *http.Transport { return NewTokenTransport(0) })
