package control

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIMatchesHandlers: every operation in openapi.yaml is served by
// the real handler (not the mux's 404/405), and every admin route
// (adminActions, which the audit log also uses) is documented.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
		Comps   map[string]map[string]yaml.Node `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi: %q", doc.OpenAPI)
	}
	f := newFixture(t, adminToken)
	var documented []string
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" {
				continue
			}
			op := strings.ToUpper(method) + " " + path
			documented = append(documented, op)
			probe := strings.ReplaceAll(path, "{id}", "openapi-probe")
			code, body, hdr := f.call(t, strings.ToUpper(method), probe, adminToken, `{"refresh_token":"x"}`)
			ct := hdr.Get("Content-Type")
			// The mux answers an unrouted path with 404 text/plain and an
			// unrouted method with 405 and Allow; the handlers answer JSON
			// or text they set themselves.
			if (code == 404 || code == 405) && !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s is documented but not served: %d %s %q", op, code, ct, body)
			}
		}
	}
	for pattern := range adminActions {
		if !slices.Contains(documented, pattern) {
			t.Errorf("admin route %s is not in openapi.yaml", pattern)
		}
	}
	for _, op := range documented {
		if strings.Contains(op, " /admin/") {
			if _, ok := adminActions[op]; !ok {
				t.Errorf("openapi.yaml documents %s, which is no admin route", op)
			}
		}
	}
	// Every $ref resolves.
	for _, ref := range regexpRefs(string(raw)) {
		parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
		if len(parts) != 2 {
			t.Errorf("$ref %s", ref)
			continue
		}
		if _, ok := doc.Comps[parts[0]][parts[1]]; !ok {
			t.Errorf("$ref %s does not resolve", ref)
		}
	}
}

func regexpRefs(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		_, after, ok := strings.Cut(line, `$ref: "`)
		if !ok {
			continue
		}
		ref, _, _ := strings.Cut(after, `"`)
		out = append(out, ref)
	}
	return out
}
