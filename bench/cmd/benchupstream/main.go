// Command benchupstream is the load benchmark's upstream: a fast local HTTP
// server that answers every request with the same realistic ~2 KiB JSON body.
// It accepts any bearer token (lsproxy's tokens are opaque to it) but answers
// 401 when the request does not carry exactly one "Authorization: Bearer …"
// header, so a proxy that forgets to inject the token shows up as errors in
// the load generator's status counts.
//
// It prints its base URL as the first line on stdout, then serves until
// SIGINT or SIGTERM. On exit it prints the request counters to stderr.
//
//	benchupstream -listen 127.0.0.1:0
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/lsproxy/lsproxy/bench/internal/benchsrv"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0: any free port)")
	rateHeaders := flag.Bool("rate-limit-headers", false, "send R-Series rate-limit headers (a bucket that never fills) on every answer, so lsproxy governs every tenant")
	flag.Parse()

	body := responseBody()
	var served, unauthorized atomic.Int64
	contentLength := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header["Authorization"]
		if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") || len(auth[0]) == len("Bearer ") {
			unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="benchupstream"`)
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		served.Add(1)
		hd := w.Header()
		hd["Content-Type"] = []string{"application/json"}
		hd["Content-Length"] = []string{contentLength}
		if *rateHeaders {
			hd["X-Ls-Api-Bucket-Level"] = bucketLevel
			hd["X-Ls-Api-Drip-Rate"] = dripRate
		}
		_, _ = w.Write(body)
	})

	benchsrv.Serve("benchupstream", *listen, h, 10*time.Minute)
	fmt.Fprintf(os.Stderr, "benchupstream: served=%d unauthorized=%d body_bytes=%d\n", served.Load(), unauthorized.Load(), len(body))
}

// A bucket that never fills: every request is governed (one store step)
// and none is held, so the benchmark measures the governor's cost.
var (
	bucketLevel = []string{"1/1000000000"}
	dripRate    = []string{"1000000000"}
)

// responseBody builds a K-Series-like list response of about 2 KiB.
func responseBody() []byte {
	type item struct {
		ID         int64   `json:"id"`
		SKU        string  `json:"sku"`
		Name       string  `json:"name"`
		Price      float64 `json:"price"`
		Currency   string  `json:"currency"`
		Category   string  `json:"category"`
		Active     bool    `json:"active"`
		ModifiedAt string  `json:"modifiedAt"`
	}
	var items []item
	for i := range 11 {
		items = append(items, item{
			ID: 700100200300 + int64(i), SKU: fmt.Sprintf("SKU-%05d", 4200+i), Name: fmt.Sprintf("Flat white %d oz", 8+i),
			Price: 3.5 + float64(i)/4, Currency: "EUR", Category: "hot-drinks", Active: i%4 != 3,
			ModifiedAt: "2025-11-10T09:30:00.000Z",
		})
	}
	b, err := json.Marshal(map[string]any{
		"businessLocationId": 45454565682155,
		"_links":             map[string]string{"self": "/f/data/businesses?page=1", "next": "/f/data/businesses?page=2"},
		"items":              items,
		"page":               map[string]int{"number": 1, "size": 11, "totalElements": 173, "totalPages": 18},
	})
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}
