package httperr_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/httperr"
)

// spec2 is SPEC §2's table for proxied traffic: these codes and statuses
// are a firm contract.
var spec2 = map[*httperr.Kind][2]any{
	httperr.MissingTenant:           {400, "missing_tenant"},
	httperr.InvalidTenant:           {400, "invalid_tenant"},
	httperr.ProxyAuthRequired:       {401, "proxy_auth_required"},
	httperr.TenantNotAllowed:        {403, "tenant_not_allowed"},
	httperr.UnknownTenant:           {404, "unknown_tenant"},
	httperr.ReauthorizationRequired: {401, "reauthorization_required"},
	httperr.TokenUnavailable:        {503, "token_unavailable"},
	httperr.UpstreamUnavailable:     {502, "upstream_unavailable"},
	httperr.UpstreamTimeout:         {504, "upstream_timeout"},
}

func TestSpecCodes(t *testing.T) {
	for k, want := range spec2 {
		if k.Status != want[0] || k.Code != want[1] || k.Message == "" {
			t.Errorf("%+v, want %v", *k, want)
		}
	}
	if !httperr.TokenUnavailable.RetryAfter || !httperr.AdminTokenUnavailable.RetryAfter {
		t.Error("token_unavailable must carry Retry-After")
	}
}

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	code := httperr.Write(rec, httperr.Error{Kind: httperr.ReauthorizationRequired, Tenant: "acme", Reason: "invalid_grant"})
	if code != "reauthorization_required" || rec.Code != 401 {
		t.Fatalf("%q %d", code, rec.Code)
	}
	h := rec.Header()
	if h.Get("X-Lsproxy-Error") != code || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" || h.Get("Retry-After") != "" {
		t.Fatalf("headers %v", h)
	}
	var got map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"error": code, "message": httperr.ReauthorizationRequired.Message, "tenant": "acme", "reason": "invalid_grant"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("body %v, want %v", got, want)
	}

	rec = httptest.NewRecorder()
	httperr.Write(rec, httperr.Error{Kind: httperr.BadRequest, Detail: "empty body"})
	got = nil
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got["message"] != httperr.BadRequest.Message+": empty body" {
		t.Fatalf("detail: %s", rec.Body)
	}
	if _, has := got["tenant"]; has {
		t.Fatalf("empty tenant not omitted: %s", rec.Body)
	}
}

// TestRetryAfter: both listeners round the same way (up, at least 1).
func TestRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]int{
		-time.Second: 1, 0: 1, time.Millisecond: 1, time.Second: 1,
		1001 * time.Millisecond: 2, 2 * time.Second: 2, 2500 * time.Millisecond: 3,
	} {
		if got := httperr.RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
		for _, k := range []*httperr.Kind{httperr.TokenUnavailable, httperr.AdminTokenUnavailable} {
			rec := httptest.NewRecorder()
			httperr.Write(rec, httperr.Error{Kind: k, RetryAfter: d})
			if got := rec.Header().Get("Retry-After"); got != strconv.Itoa(want) {
				t.Errorf("%s %v: Retry-After %q, want %d", k.Code, d, got, want)
			}
		}
	}
}

func TestStatusWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	sw := &httperr.StatusWriter{ResponseWriter: rec}
	if sw.StatusOr200() != 200 {
		t.Fatal("nothing written must read 200")
	}
	sw.WriteHeader(http.StatusEarlyHints) // 1xx: passed on, not recorded
	if sw.Status != 0 {
		t.Fatalf("1xx recorded: %d", sw.Status)
	}
	sw.WriteHeader(http.StatusTeapot)
	sw.WriteHeader(http.StatusInternalServerError) // superfluous: ignored
	if sw.Status != http.StatusTeapot {
		t.Fatalf("status %d", sw.Status)
	}
	if http.NewResponseController(sw).Flush() != nil {
		t.Fatal("Unwrap does not reach the recorder's Flush")
	}

	sw = &httperr.StatusWriter{ResponseWriter: httptest.NewRecorder()}
	_, _ = sw.Write([]byte("x"))
	if sw.Status != 200 {
		t.Fatalf("write without header: %d", sw.Status)
	}
}
