package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// The schema test validates live admin answers against control/openapi.yaml
// with a small JSON Schema evaluator: the keywords below, and nothing else
// (a document using another keyword fails, so the evaluator can never be
// silently laxer than the document).
var schemaKeywords = []string{"type", "properties", "required", "additionalProperties", "items", "enum", "format",
	"description", "$ref", "pattern", "maxLength", "minimum"}

type openAPIDoc struct {
	Paths      map[string]map[string]any `yaml:"paths"`
	Components struct {
		Schemas   map[string]any `yaml:"schemas"`
		Responses map[string]any `yaml:"responses"`
	} `yaml:"components"`
}

func loadOpenAPI(t *testing.T) *openAPIDoc {
	t.Helper()
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d openAPIDoc
	if err := yaml.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// resolve follows a $ref ("#/components/schemas/X" or ".../responses/X").
func (d *openAPIDoc) resolve(node map[string]any) map[string]any {
	for i := 0; i < 8; i++ {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		var m map[string]any
		switch {
		case strings.HasPrefix(ref, "#/components/schemas/"):
			m, _ = d.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
		case strings.HasPrefix(ref, "#/components/responses/"):
			m, _ = d.Components.Responses[strings.TrimPrefix(ref, "#/components/responses/")].(map[string]any)
		}
		if m == nil {
			return map[string]any{"unresolved": ref}
		}
		node = m
	}
	return node
}

// responseSchema is the JSON schema of method path's answer with status.
func (d *openAPIDoc) responseSchema(method, path string, status int) (map[string]any, error) {
	op, _ := d.Paths[path][strings.ToLower(method)].(map[string]any)
	if op == nil {
		return nil, fmt.Errorf("%s %s is not documented", method, path)
	}
	responses, _ := op["responses"].(map[string]any)
	resp, _ := responses[strconv.Itoa(status)].(map[string]any)
	if resp == nil {
		return nil, fmt.Errorf("%s %s: status %d is not documented", method, path, status)
	}
	resp = d.resolve(resp)
	content, _ := resp["content"].(map[string]any)
	js, _ := content["application/json"].(map[string]any)
	if js == nil {
		return nil, nil // no JSON body documented (204)
	}
	schema, _ := js["schema"].(map[string]any)
	return schema, nil
}

// validate checks v (decoded JSON) against schema, returning every problem.
func (d *openAPIDoc) validate(schema map[string]any, v any, at string) []string {
	schema = d.resolve(schema)
	if u, ok := schema["unresolved"]; ok {
		return []string{at + ": unresolved $ref " + fmt.Sprint(u)}
	}
	var problems []string
	if typ, ok := schema["type"]; ok && !slices.ContainsFunc(asList(typ), func(t string) bool { return jsonType(t, v) }) {
		return []string{fmt.Sprintf("%s: %T is not %v", at, v, typ)}
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, v) {
		problems = append(problems, fmt.Sprintf("%s: %v is not one of %v", at, v, enum))
	}
	if f, ok := schema["format"].(string); ok {
		if s, isStr := v.(string); isStr {
			switch f {
			case "date-time":
				if _, err := time.Parse(time.RFC3339, s); err != nil {
					problems = append(problems, fmt.Sprintf("%s: %q is not a date-time", at, s))
				}
			case "uri":
				if u, err := url.Parse(s); err != nil || !u.IsAbs() {
					problems = append(problems, fmt.Sprintf("%s: %q is not a URI", at, s))
				}
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		for _, r := range asList(schema["required"]) {
			if _, ok := x[r]; !ok {
				problems = append(problems, fmt.Sprintf("%s: required property %q missing", at, r))
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := props[k].(map[string]any); ok {
				problems = append(problems, d.validate(p, x[k], at+"."+k)...)
				continue
			}
			switch ap := schema["additionalProperties"].(type) {
			case bool:
				if !ap {
					problems = append(problems, fmt.Sprintf("%s: property %q is not in the schema (additionalProperties: false)", at, k))
				}
			case map[string]any:
				problems = append(problems, d.validate(ap, x[k], at+"."+k)...)
			}
		}
	case []any:
		if items, ok := schema["items"].(map[string]any); ok {
			for i, e := range x {
				problems = append(problems, d.validate(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return problems
}

func asList(v any) []string {
	if s, ok := v.(string); ok {
		return []string{s}
	}
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func jsonType(typ string, v any) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "null": // OpenAPI 3.1: type: [object, "null"]
		return v == nil
	}
	return false
}

// checkKeywords fails on a schema keyword the evaluator does not know.
func checkKeywords(t *testing.T, node any, at string) {
	switch x := node.(type) {
	case map[string]any:
		for k, v := range x {
			switch k {
			case "properties":
				props, _ := v.(map[string]any)
				for name, p := range props {
					checkKeywords(t, p, at+".properties."+name)
				}
				continue
			case "items", "additionalProperties":
				checkKeywords(t, v, at+"."+k)
				continue
			}
			if !slices.Contains(schemaKeywords, k) {
				t.Errorf("%s: schema keyword %q is not checked by the schema test; add it to the evaluator", at, k)
			}
		}
	}
}

// TestOpenAPISchemasAreClosed: every object schema of the document says
// additionalProperties (false, or a schema for maps), so an answer with an
// undocumented property fails validation; and the evaluator knows every
// keyword used.
func TestOpenAPISchemasAreClosed(t *testing.T) {
	d := loadOpenAPI(t)
	for name, s := range d.Components.Schemas {
		checkKeywords(t, s, name)
		m, _ := s.(map[string]any)
		if m["type"] == "object" {
			if _, ok := m["additionalProperties"]; !ok {
				t.Errorf("schema %s: an object schema without additionalProperties", name)
			}
		}
	}
	// The evaluator refuses what it must refuse.
	tenant := map[string]any{"$ref": "#/components/schemas/Tenant"}
	bad := map[string]any{"id": "x", "status": "active", "refresh_count": 0.0, "failure_count": 0.0, "has_refresh_token": true, "version": 1.0, "bogus": 1.0}
	if p := d.validate(tenant, bad, "tenant"); len(p) != 1 || !strings.Contains(p[0], `"bogus"`) {
		t.Errorf("an undocumented property: %v", p)
	}
	delete(bad, "bogus")
	bad["history"] = []any{map[string]any{"at": "yesterday", "kind": "refreshed"}}
	if p := d.validate(tenant, bad, "tenant"); len(p) != 1 || !strings.Contains(p[0], "date-time") {
		t.Errorf("a bad date-time in history: %v", p)
	}
}

// TestOpenAPILiveAnswers: every admin answer the real handlers give, for a
// tenant with every field set (history, account, locations, rate_limit),
// validates against the schema documented for its status.
func TestOpenAPILiveAnswers(t *testing.T) {
	d := loadOpenAPI(t)
	base := newFixture(t, adminToken)
	blocked := time.Date(2026, 12, 1, 12, 0, 5, 0, time.UTC)
	reset := blocked.Add(time.Minute)
	cs := &Server{Store: base.store, Tokens: base.tokens, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(), Provider: "k-series",
		Onboarding: fakeOnboarding{}, RateLimits: fakeBudgets{b: ratelimit.Budget{Kind: "window", Limit: 100, Used: 3, ResetAt: &reset, BlockedUntil: &blocked}, ok: true}}
	srv := httptest.NewServer(cs.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{srv: srv, store: base.store, tokens: base.tokens}
	now := time.Now().UTC()
	full := &store.Tenant{ID: "full", Provider: "k-series", RefreshToken: "RT-FULL", AccessToken: "AT-FULL", AccessExpiresAt: now.Add(time.Hour),
		RefreshExpiresAt: now.Add(24 * time.Hour), Scope: "orders-api", Status: store.StatusActive, LastRefreshAt: now, RefreshCount: 3, CreatedAt: now, UpdatedAt: now,
		Extra:   map[string]string{"domain_prefix": "shop"},
		Account: &store.Account{ID: "B1", Name: "Bistro"}, Locations: []store.Location{{ID: "L1", Name: "Main", BusinessID: "B1"}}, LocationsAt: now}
	full.Record(now, store.EventImported, "")
	full.Record(now, store.EventRefreshFailed, "token endpoint timed out")
	full.Record(now, store.EventRefreshFailed, "token endpoint timed out")
	full.Record(now, store.EventFlagged, "refresh token rejected by the provider (invalid_grant)")
	if _, err := f.store.Put(context.Background(), full, 0); err != nil {
		t.Fatal(err)
	}
	type call struct {
		method, path, doc, body string
	}
	calls := []call{
		{"GET", "/admin/tenants", "/admin/tenants", ""},
		{"GET", "/admin/tenants?status=active&limit=1", "/admin/tenants", ""},
		{"GET", "/admin/tenants?limit=x", "/admin/tenants", ""},
		{"GET", "/admin/tenants/full", "/admin/tenants/{id}", ""},
		{"GET", "/admin/tenants/nobody", "/admin/tenants/{id}", ""},
		{"GET", "/admin/tenants/bad%20id", "/admin/tenants/{id}", ""},
		{"PUT", "/admin/tenants/new", "/admin/tenants/{id}", `{"refresh_token":"RT-NEW","access_token":"AT-NEW","expires_in":3600}`},
		{"PUT", "/admin/tenants/new", "/admin/tenants/{id}", `{"refresh_token":"RT-NEW2"}`},
		{"PUT", "/admin/tenants/new", "/admin/tenants/{id}", `{"refresh_token":""}`},
		{"POST", "/admin/tenants/full/refresh", "/admin/tenants/{id}/refresh", ""},
		{"POST", "/admin/tenants/full/retry", "/admin/tenants/{id}/retry", ""},
		{"POST", "/admin/tenants/full/locations", "/admin/tenants/{id}/locations", ""},
		{"POST", "/admin/tenants/full/authorize", "/admin/tenants/{id}/authorize", ""},
		{"POST", "/admin/import?dry_run=true", "/admin/import", "{\"id\":\"i1\",\"refresh_token\":\"RT-I1\"}\nnot json\n"},
		{"POST", "/admin/import", "/admin/import", "{\"id\":\"i1\",\"refresh_token\":\"RT-I1\"}\n"},
		{"POST", "/admin/import", "/admin/import", strings.Repeat("{}\n", MaxImportLines+1)},
		{"DELETE", "/admin/tenants/new", "/admin/tenants/{id}", ""},
		{"DELETE", "/admin/tenants/new", "/admin/tenants/{id}", ""},
	}
	for _, c := range calls {
		st, body, _ := f.call(t, c.method, c.path, adminToken, c.body)
		schema, err := d.responseSchema(c.method, c.doc, st)
		if err != nil {
			t.Errorf("%s %s: %v (body %.200s)", c.method, c.path, err, body)
			continue
		}
		if schema == nil {
			if strings.TrimSpace(body) != "" {
				t.Errorf("%s %s: %d answered a body where none is documented: %.200s", c.method, c.path, st, body)
			}
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Errorf("%s %s: %d not JSON: %.200s", c.method, c.path, st, body)
			continue
		}
		for _, p := range d.validate(schema, v, fmt.Sprintf("%s %s %d", c.method, c.path, st)) {
			t.Error(p)
		}
	}
	// The tenant answer did carry every field this test set out to check.
	_, body, _ := f.call(t, "GET", "/admin/tenants/full", adminToken, "")
	for _, k := range []string{`"history"`, `"account"`, `"locations"`, `"locations_at"`, `"rate_limit"`, `"extra"`} {
		if !strings.Contains(body, k) {
			t.Errorf("the full tenant's answer lacks %s: %s", k, body)
		}
	}
	// Wrong tokens: 401, then 429, both documented.
	for i := 0; i <= DefaultAdminAttempts; i++ {
		st, body, _ := f.call(t, "GET", "/admin/tenants", "wrong", "")
		schema, err := d.responseSchema("GET", "/admin/tenants", st)
		if err != nil {
			t.Fatalf("wrong token %d: %v", i, err)
		}
		var v any
		_ = json.Unmarshal([]byte(body), &v)
		for _, p := range d.validate(schema, v, fmt.Sprintf("wrong token %d: %d", i, st)) {
			t.Error(p)
		}
	}
}
