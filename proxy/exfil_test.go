package proxy

// Exfiltration tests (SPEC §2 "Proxied traffic", §5): every way a caller
// might send a request, and with it a tenant's token, anywhere but the
// configured upstream, or make the token reach the caller. Requests are
// written as raw bytes over loopback TCP so that nothing in a client
// library normalises the attack away. A recording listener stands for
// "another host"; the upstream records every request it gets.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// evilHost is a raw TCP listener standing for any host that is not the
// upstream. It records every connection and whatever bytes arrive.
type evilHost struct {
	l    net.Listener
	addr string

	mu    sync.Mutex
	conns int
	data  bytes.Buffer
	wg    sync.WaitGroup
}

func newEvilHost(t *testing.T) *evilHost {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &evilHost{l: l, addr: l.Addr().String()}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns++
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				b, _ := io.ReadAll(io.LimitReader(c, 64<<10))
				e.mu.Lock()
				e.data.Write(b)
				e.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		e.wg.Wait()
	})
	return e
}

// check fails the test if anything reached the host.
func (e *evilHost) check(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conns > 0 {
		t.Errorf("another host was contacted %d times; it received %q", e.conns, e.data.String())
	}
}

// upReq is a request as the upstream saw it.
type upReq struct {
	Method, RequestURI, Host string
	Header                   http.Header
	Body                     string
}

// exfil is the harness: a Handler served by httptest in front of a
// recording upstream (path prefix /api), a fake TokenSource that records
// the tenant ids it is asked for, and an evil host.
type exfil struct {
	proxyAddr string
	upstream  *url.URL
	evil      *evilHost
	tokens    *askTokens

	mu   sync.Mutex
	reqs []upReq
}

// askTokens is fakeTokens recording every tenant id asked for.
type askTokens struct {
	fakeTokens
	askMu sync.Mutex
	asked []string
}

func (a *askTokens) Token(ctx context.Context, tenant string) (auth.Token, error) {
	a.askMu.Lock()
	a.asked = append(a.asked, tenant)
	a.askMu.Unlock()
	return a.fakeTokens.Token(ctx, tenant)
}

var exfilTokens = map[string]string{"acme": "tok-acme-7Qx", "beta": "tok-beta-9Zr"}

func newExfil(t *testing.T, prefix string, opts ...func(*Handler)) *exfil {
	t.Helper()
	x := &exfil{evil: newEvilHost(t)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		x.mu.Lock()
		x.reqs = append(x.reqs, upReq{r.Method, r.RequestURI, r.Host, r.Header.Clone(), string(b)})
		x.mu.Unlock()
		if r.Method == http.MethodTrace {
			// A TRACE-enabled server echoes the request it received.
			w.Header().Set("Content-Type", "message/http")
			r.Header.Write(w)
			return
		}
		if strings.Contains(r.URL.Path, "/redirect/") {
			code := 302
			fmt.Sscanf(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:], "%d", &code)
			w.Header().Set("Location", r.URL.Query().Get("to"))
			w.WriteHeader(code)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	x.upstream, _ = url.Parse(up.URL + prefix)
	ft := &askTokens{fakeTokens: fakeTokens{tokens: map[string]string{}, errs: map[string]error{}, onRecover: map[string]string{}}}
	for k, v := range exfilTokens {
		ft.tokens[k] = v
	}
	x.tokens = ft
	h := &Handler{Upstream: x.upstream, Tokens: ft, Transport: NewTransport(TransportOptions{ResponseHeaderTimeout: 2 * time.Second})}
	for _, o := range opts {
		o(h)
	}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	x.proxyAddr = srv.Listener.Addr().String()
	return x
}

// raw sends one raw HTTP/1.1 request and returns the response (nil if the
// server closed the connection without one) and the response as text.
func (x *exfil) raw(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", x.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var all bytes.Buffer
	resp.Header.Write(&all)
	all.Write(body)
	return resp, all.String()
}

// get builds a GET with the target and header lines given, tenant acme.
func get(target string, headers ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: lsproxy.local\r\nX-Tenant: acme\r\n" +
		strings.Join(append(headers, "Connection: close"), "\r\n") + "\r\n\r\n"
}

func (x *exfil) upstreamRequests() []upReq {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]upReq(nil), x.reqs...)
}

// checkUpstream asserts the invariants for every request the upstream got:
// the upstream's own Host, and exactly one Authorization header carrying
// the token of tenant (acme unless given).
func (x *exfil) checkUpstream(t *testing.T, want int, tenant ...string) []upReq {
	t.Helper()
	reqs := x.upstreamRequests()
	if len(reqs) != want {
		t.Errorf("upstream got %d requests, want %d: %+v", len(reqs), want, reqs)
	}
	tn := "acme"
	if len(tenant) > 0 {
		tn = tenant[0]
	}
	for _, r := range reqs {
		if r.Host != x.upstream.Host {
			t.Errorf("upstream saw Host %q, want %q", r.Host, x.upstream.Host)
		}
		if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+exfilTokens[tn] {
			t.Errorf("upstream saw Authorization %q, want exactly [Bearer %s]", got, exfilTokens[tn])
		}
		for _, h := range []string{"X-Tenant", "Proxy-Authorization", "Cookie", "X-Forwarded-Host", "X-Forwarded-For", "X-Forwarded-Proto", "Forwarded"} {
			if v := r.Header.Values(h); len(v) > 0 {
				t.Errorf("upstream got %s: %q", h, v)
			}
		}
	}
	return reqs
}

// noTokenIn asserts the caller's response holds no token.
func noTokenIn(t *testing.T, resp string) {
	t.Helper()
	for _, tok := range exfilTokens {
		if strings.Contains(resp, tok) {
			t.Errorf("a token reached the caller: %q", resp)
		}
	}
}

// Attack: an absolute-form request target naming another host. Defence:
// rewrite's SetURL(Upstream) replaces scheme, host and path base.
func TestExfilAbsoluteFormTarget(t *testing.T) {
	for _, target := range []string{
		"http://EVIL/x?q=1",
		"https://EVIL/x",
		"http://user:pass@EVIL/x",
		"http://EVIL",
	} {
		t.Run(target, func(t *testing.T) {
			x := newExfil(t, "/api")
			target := strings.ReplaceAll(target, "EVIL", x.evil.addr)
			resp, all := x.raw(t, get(target))
			if resp == nil || resp.StatusCode != 200 {
				t.Fatalf("response %v %s", resp, all)
			}
			noTokenIn(t, all)
			reqs := x.checkUpstream(t, 1)
			if len(reqs) == 1 && !strings.HasPrefix(reqs[0].RequestURI, "/api") {
				t.Errorf("upstream path %q", reqs[0].RequestURI)
			}
			x.evil.check(t)
		})
	}
}

// Attack: Host, X-Forwarded-Host and Forwarded naming another host (and the
// caller's own credentials riding along). Defence: SetURL resets the
// outbound Host; ReverseProxy (Rewrite) drops X-Forwarded-*; rewrite drops
// Forwarded, Cookie and Proxy-Authorization.
func TestExfilHostHeaders(t *testing.T) {
	x := newExfil(t, "/api")
	e := x.evil.addr
	cases := [][]string{
		{"X-Forwarded-Host: " + e},
		{"X-Forwarded-Host: " + e, "X-Forwarded-Proto: https", "X-Forwarded-For: 10.0.0.1"},
		{"Forwarded: host=" + e + ";proto=https"},
		{"X-Host: " + e, "X-Original-URL: http://" + e + "/x", "X-Rewrite-URL: http://" + e + "/x"},
		{"Cookie: session=caller-secret", "Proxy-Authorization: Basic Y2FsbGVyOnNlY3JldA=="},
	}
	for _, hdrs := range cases {
		req := strings.Replace(get("/x", hdrs...), "Host: lsproxy.local", "Host: "+e, 1)
		resp, all := x.raw(t, req)
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("%v: response %v %s", hdrs, resp, all)
		}
		noTokenIn(t, all)
	}
	x.checkUpstream(t, len(cases))
	x.evil.check(t)
}

// Attack: the Connection header naming Authorization (to drop the injected
// token), the tenant header, or the caller-key header. Defence: the token
// is set in the transport, after ReverseProxy removed the hop-by-hop
// headers; the tenant and caller key are read from the inbound request.
func TestExfilConnectionHeader(t *testing.T) {
	key, hash, _ := NewClientKey()
	keys, _ := ParseClientKeys([]string{"app:" + hash + ":acme"})
	x := newExfil(t, "/api", func(h *Handler) { h.Authenticate = NewCallerAuth(keys).Authenticate })
	pa := "Proxy-Authorization: Bearer " + key
	cases := [][]string{
		{pa, "Connection: Authorization"},
		{pa, "Authorization: Bearer client-own", "Connection: Authorization"},
		{pa, "Authorization: Bearer one", "Authorization: Bearer two", "Connection: keep-alive, Authorization"},
		{pa, "Connection: X-Tenant"},
		{pa, "Connection: Proxy-Authorization, X-Tenant, Authorization"},
		{pa, "Connection: Authorization", "Connection: Host"},
	}
	for _, hdrs := range cases {
		resp, all := x.raw(t, get("/x", hdrs...))
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("%v: response %v %s", hdrs, resp, all)
		}
		noTokenIn(t, all)
	}
	// Naming Proxy-Authorization in Connection does not skip caller authentication.
	resp, _ := x.raw(t, get("/x", "Connection: Proxy-Authorization"))
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("without key: %v", resp)
	}
	x.checkUpstream(t, len(cases))
	x.evil.check(t)
}

// Attack: the upstream (or something on its path) answers a redirect to
// another host. Defence: the transport is a RoundTripper, never an
// http.Client: the 3xx goes back to the caller unchanged and nothing
// follows it with the token.
func TestExfilUpstreamRedirectNotFollowed(t *testing.T) {
	x := newExfil(t, "/api")
	locs := []string{"http://" + x.evil.addr + "/steal", "//" + x.evil.addr + "/steal", "https://" + x.evil.addr + "/steal"}
	n := 0
	for _, code := range []int{301, 302, 303, 307, 308} {
		for _, loc := range locs {
			resp, all := x.raw(t, get(fmt.Sprintf("/redirect/%d?to=%s", code, url.QueryEscape(loc))))
			n++
			if resp == nil || resp.StatusCode != code || resp.Header.Get("Location") != loc {
				t.Fatalf("%d %s: got %v %s", code, loc, resp, all)
			}
			noTokenIn(t, all)
		}
	}
	// Also with a body (307/308 would make a client re-send it).
	resp, _ := x.raw(t, "POST /redirect/307?to="+url.QueryEscape(locs[0])+" HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody")
	n++
	if resp == nil || resp.StatusCode != 307 {
		t.Fatalf("POST 307: %v", resp)
	}
	x.checkUpstream(t, n)
	x.evil.check(t)
}

// Attack: request targets that try to leave the upstream or its path
// prefix, or to inject header lines through encoded CR/LF. Defence: the
// target is joined onto the fixed upstream URL with its encoding kept
// (RawPath), so the upstream gets the exact bytes sent, on its own Host;
// net/http never decodes %0d%0a into the request it writes.
func TestExfilPathTricks(t *testing.T) {
	targets := []string{
		"//EVIL/x",
		"///EVIL/x",
		"//EVIL",
		"/..%2f..%2fx",
		"/%2e%2e/%2e%2e/x",
		"/../../x",
		"/%2F%2FEVIL/x",
		"/@EVIL/x",
		"/x%0d%0aX-Injected:%20yes",
		"/%0d%0aHost:%20EVIL/x",
		"/x?q=%0d%0aX-Injected:%20yes",
		"/x?q=1%0d%0a%0d%0aGET%20/smuggled%20HTTP/1.1%0d%0aHost:%20EVIL",
		"/x?next=http://EVIL/&url=//EVIL",
		"/x%00y",
		"*",
	}
	for _, prefix := range []string{"/api", ""} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			x := newExfil(t, prefix)
			var sent []string
			for _, tgt := range targets {
				tgt = strings.ReplaceAll(tgt, "EVIL", x.evil.addr)
				resp, all := x.raw(t, get(tgt))
				if resp == nil {
					t.Fatalf("%s: no response", tgt)
				}
				noTokenIn(t, all)
				t.Logf("%s: %d", tgt, resp.StatusCode)
				if resp.StatusCode == 200 {
					sent = append(sent, tgt)
				} else if resp.StatusCode != 400 {
					t.Errorf("%s: status %d", tgt, resp.StatusCode)
				}
			}
			reqs := x.checkUpstream(t, len(sent))
			for i, r := range reqs {
				if i >= len(sent) {
					break
				}
				if _, ok := r.Header["X-Injected"]; ok {
					t.Errorf("%s: header injected upstream", sent[i])
				}
				want := prefix + sent[i]
				if sent[i] == "*" {
					want = prefix + "/%2A" // the asterisk-form becomes a path, escaped
				}
				if r.RequestURI != want {
					t.Errorf("%s: upstream request target %q, want %q", sent[i], r.RequestURI, want)
				}
			}
			for _, r := range reqs {
				if strings.Contains(r.RequestURI, "smuggled") && r.Method != "GET" || strings.HasPrefix(r.RequestURI, "/smuggled") {
					t.Errorf("a smuggled request reached the upstream: %+v", r)
				}
			}
			x.evil.check(t)
		})
	}
}

// Attack: a tenant header carrying CR/LF, control bytes, unicode or
// look-alike characters, to reach another tenant's record or a store key.
// Defence: ValidTenantID before anything else; net/http rejects raw
// control bytes in header values. The TokenSource is never asked for a
// tenant id that is not valid.
func TestExfilTenantHeaderTricks(t *testing.T) {
	x := newExfil(t, "/api")
	values := []string{
		"acme%0d%0aX-Injected: yes",
		"acme\rX-Injected: yes",
		"acme\x00",
		"acme\x7f",
		"acm\u00e9",      // é
		"\u0430cme",      // Cyrillic а
		"acme\u200b",     // zero-width space
		"acme\uff0fbeta", // fullwidth solidus
		"acme/../beta",
		"acme}{beta", // Redis hash-tag breaker
		"acme beta",
		"acme,beta",
		"*",
		"acme%00",
		"..",
	}
	for _, v := range values {
		req := "GET /x HTTP/1.1\r\nHost: x\r\nX-Tenant: " + v + "\r\nConnection: close\r\n\r\n"
		resp, all := x.raw(t, req)
		if resp == nil || resp.StatusCode != 400 {
			t.Errorf("tenant %q: got %v %s", v, resp, all)
			continue
		}
		noTokenIn(t, all)
	}
	// A folded (obs-fold) tenant header and two tenant headers in different case.
	for _, req := range []string{
		"GET /x HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\n beta\r\nConnection: close\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nx-tenant: beta\r\nConnection: close\r\n\r\n",
	} {
		if resp, _ := x.raw(t, req); resp == nil || resp.StatusCode != 400 {
			t.Errorf("%q: got %v", req, resp)
		}
	}
	x.tokens.askMu.Lock()
	for _, a := range x.tokens.asked {
		if !store.ValidTenantID(a) {
			t.Errorf("TokenSource asked for invalid tenant %q", a)
		}
	}
	x.tokens.askMu.Unlock()
	x.checkUpstream(t, 0)
	x.evil.check(t)
}

// Attack: TRACE makes a server echo the request, injected token included,
// back to the caller; CONNECT names another host. Defence: both are
// answered 405 by lsproxy and never forwarded.
func TestExfilTraceAndConnect(t *testing.T) {
	x := newExfil(t, "/api")
	for _, req := range []string{
		"TRACE /x HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nConnection: close\r\n\r\n",
		"TRACE * HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nConnection: close\r\n\r\n",
		"CONNECT " + x.evil.addr + " HTTP/1.1\r\nHost: " + x.evil.addr + "\r\nX-Tenant: acme\r\n\r\n",
	} {
		resp, all := x.raw(t, req)
		if resp == nil || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("X-Lsproxy-Error") != httperr.MethodNotAllowed.Code {
			t.Errorf("%q: got %v %s", req, resp, all)
		}
		noTokenIn(t, all)
	}
	x.checkUpstream(t, 0)
	x.evil.check(t)
}

// Attack: request smuggling. Content-Length and Transfer-Encoding
// together, duplicate lengths, or a body holding a second request, so that
// the upstream connection (shared by all callers) and lsproxy disagree on
// where a request ends, and a request travels with a token lsproxy did not
// choose for it. Defence: net/http rejects ambiguous lengths, lets
// Transfer-Encoding override Content-Length, and re-frames every body it
// forwards; lsproxy picks the token per parsed request. Each request names
// its tenant in its path, and every upstream request must carry exactly
// that tenant's token; the upstream gets no more requests than lsproxy
// answered with its response.
func TestExfilRequestSmuggling(t *testing.T) {
	x := newExfil(t, "/api")
	smuggled := "GET /as-beta HTTP/1.1\r\nHost: x\r\nX-Tenant: beta\r\nConnection: close\r\n\r\n"
	cases := []string{
		// CL.TE: net/http goes by Transfer-Encoding; the rest is the caller's
		// own next request on its own connection, with its own tenant.
		"POST /as-acme HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		// TE.CL
		"POST /as-acme HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n" + smuggled,
		// Unknown Transfer-Encoding: refused.
		"POST /as-acme HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nbody" + smuggled,
		// Two different Content-Length values: refused.
		"POST /as-acme HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nContent-Length: 4\r\nContent-Length: 70\r\n\r\nbody" + smuggled,
		// A body that is itself a request: forwarded as a body, nothing more.
		fmt.Sprintf("POST /as-acme HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(smuggled), smuggled),
	}
	answered := 0
	for _, c := range cases {
		conn, err := net.Dial("tcp", x.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, c)
		br := bufio.NewReader(conn)
		for range 3 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			noTokenIn(t, string(b))
			t.Logf("case %.40q: %d", c, resp.StatusCode)
			if resp.StatusCode == 200 {
				answered++
			}
			if resp.Close {
				break
			}
		}
		conn.Close()
	}
	reqs := x.upstreamRequests()
	if len(reqs) != answered {
		t.Errorf("upstream got %d requests, lsproxy answered %d", len(reqs), answered)
	}
	for _, r := range reqs {
		tn := strings.TrimPrefix(r.RequestURI, "/api/as-")
		if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+exfilTokens[tn] {
			t.Errorf("%s %s carried %q", r.Method, r.RequestURI, got)
		}
	}
	last := reqs[len(reqs)-1]
	if last.Body != smuggled || last.RequestURI != "/api/as-acme" {
		t.Errorf("a request-shaped body was not forwarded as a body: %+v", last)
	}
	x.evil.check(t)
}

// Many requests for two tenants on one keep-alive connection: each
// upstream request carries its own tenant's token and only that.
func TestExfilTenantsOnOneConnection(t *testing.T) {
	x := newExfil(t, "/api")
	conn, err := net.Dial("tcp", x.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	order := []string{"acme", "beta", "beta", "acme", "beta"}
	for i, tn := range order {
		fmt.Fprintf(conn, "GET /t/%d HTTP/1.1\r\nHost: x\r\nX-Tenant: %s\r\nAuthorization: Bearer %s\r\n\r\n", i, tn, exfilTokens[other(tn)])
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	reqs := x.upstreamRequests()
	if len(reqs) != len(order) {
		t.Fatalf("upstream got %d", len(reqs))
	}
	for i, r := range reqs {
		want := "Bearer " + exfilTokens[order[i]]
		if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != want {
			t.Errorf("request %d (%s): Authorization %q", i, order[i], got)
		}
	}
}

func other(tn string) string {
	if tn == "acme" {
		return "beta"
	}
	return "acme"
}

// The upstream transport ignores HTTP(S)_PROXY (a token would go to the
// proxy host) and never skips certificate verification.
func TestTransportNoEnvProxyVerifiesTLS(t *testing.T) {
	tr := NewTransport(TransportOptions{})
	if tr.Proxy != nil {
		t.Error("the upstream transport uses a proxy function")
	}
	if tr.TLSClientConfig != nil && tr.TLSClientConfig.InsecureSkipVerify {
		t.Error("the upstream transport skips TLS verification")
	}
	// A TLS upstream with an unknown certificate is refused, not trusted.
	up := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("request reached an upstream with an untrusted certificate")
	}))
	defer up.Close()
	target, _ := url.Parse(up.URL)
	h := &Handler{Upstream: target, Tokens: &fakeTokens{tokens: map[string]string{"acme": "tok"}}, Transport: tr}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
	req.Header.Set("X-Tenant", "acme")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("untrusted upstream certificate: %d", resp.StatusCode)
	}
}
