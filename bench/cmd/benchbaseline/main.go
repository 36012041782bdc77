// Command benchbaseline is the load benchmark's ceiling: a bare
// httputil.ReverseProxy that forwards to one upstream and sets a static
// Authorization header, with nothing else (no tenant lookup, no metrics, no
// logging). Its transport is tuned like lsproxy's (keep-alive pool sized for
// many concurrent requests to one host) and it recycles copy buffers like
// lsproxy does, so the comparison measures lsproxy's own work, not tuning.
//
// It prints its base URL as the first line on stdout, then serves until
// SIGINT or SIGTERM.
//
//	benchbaseline -upstream http://127.0.0.1:9000 -token static-token
package main

import (
	"flag"
	"fmt"
	"github.com/lsproxy/lsproxy/bench/internal/benchsrv"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0: any free port)")
	upstream := flag.String("upstream", "", "upstream base URL (required)")
	token := flag.String("token", "static-bench-token", "bearer token sent upstream")
	tenantHeader := flag.String("tenant-header", "X-Tenant", "header removed before forwarding")
	flush := flag.Duration("flush-interval", 0, "ReverseProxy.FlushInterval (lsproxy uses -1ns)")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "benchbaseline: -upstream must be an absolute URL\n")
		os.Exit(2)
	}
	authz := "Bearer " + *token
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = ""
			pr.Out.Header.Del(*tenantHeader)
			pr.Out.Header.Set("Authorization", authz)
		},
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   512,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		BufferPool:    bufferPool{},
		FlushInterval: *flush,
	}

	benchsrv.Serve("benchbaseline", *listen, rp, 2*time.Minute)
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
