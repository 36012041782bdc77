package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/lsproxy/lsproxy/config"
)

// TestSchemaRejectsWrongValues: values.schema.json makes helm lint --strict
// and helm template refuse a values file with a wrong type, an unknown key
// and a value outside an enum, naming each.
func TestSchemaRejectsWrongValues(t *testing.T) {
	helm := requireTool(t, "helm")
	bad := filepath.Join(t.TempDir(), "wrong-values.yaml")
	if err := os.WriteFile(bad, []byte("replicaCount: two\nimage:\n  tagg: v1\nredis:\n  mode: mysql\nserviceMonitor:\n  enabled: \"yes\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"lint", "--strict", chartDir, "-f", bad}, {"template", "x", chartDir, "-f", bad}} {
		out, stderr, err := run(t, ".", os.Environ(), helm, cmd...)
		if err == nil {
			t.Fatalf("helm %s accepted a wrong values file:\n%s", cmd[0], out)
		}
		for _, want := range []string{"/replicaCount", "tagg", "/redis/mode", "/serviceMonitor/enabled"} {
			if !strings.Contains(out+stderr, want) {
				t.Errorf("helm %s: the refusal does not name %s:\n%s%s", cmd[0], want, out, stderr)
			}
		}
	}
}

// TestSchemaCoversValues: every key of values.yaml has a schema property
// and every schema property is a key of values.yaml, down to free-form
// objects (which the schema leaves open).
func TestSchemaCoversValues(t *testing.T) {
	var values map[string]any
	b, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	b, err = os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	var walk func(path string, v map[string]any, s map[string]any)
	walk = func(path string, v map[string]any, s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		if props == nil || path == "config." {
			return // free-form, or config: every lsproxy option is typed, values.yaml sets a few
		}
		if s["additionalProperties"] != false {
			t.Errorf("schema %s: a closed object must set additionalProperties: false", path)
		}
		for k, sub := range v {
			ps, ok := props[k].(map[string]any)
			if !ok {
				t.Errorf("values.yaml %s%s has no schema", path, k)
				continue
			}
			if m, ok := sub.(map[string]any); ok {
				walk(path+k+".", m, ps)
			}
		}
		for k := range props {
			if _, ok := v[k]; !ok {
				t.Errorf("values.schema.json %s%s is not in values.yaml", path, k)
			}
		}
	}
	walk("", values, schema)
}

// TestChartExtensions: commonLabels on every object, extraObjects,
// extraContainers and initContainers in the pod, the Reloader annotation
// for Secrets the chart does not own, and a ServiceMonitor that verifies
// the control listener's certificate by default.
func TestChartExtensions(t *testing.T) {
	out, err := helmTemplate(t, []string{chartDir + "/ci/existing-secret-values.yaml"},
		"commonLabels.team=payments", "secretReloader=true",
		"extraObjects[0].apiVersion=v1", "extraObjects[0].kind=ConfigMap", "extraObjects[0].metadata.name=extra-{{ .Release.Name }}",
		"extraContainers[0].name=shipper", "extraContainers[0].image=busybox",
		"initContainers[0].name=wait", "initContainers[0].image=busybox",
		"serviceMonitor.enabled=true", "tls.control.secretName=control-tls")
	if err != nil {
		t.Fatal(err)
	}
	r := parseManifests(t, out)
	for _, d := range r.docs {
		extra := strings.HasPrefix(str(dig(d, "metadata", "name")), "extra-") // the user's own object
		if !extra && dig(d, "metadata", "labels", "team") != "payments" {
			t.Errorf("%s %s lacks commonLabels", d["kind"], dig(d, "metadata", "name"))
		}
	}
	if r.find("ConfigMap", "extra-"+releaseName) == nil {
		t.Error("extraObjects not rendered (or not through tpl)")
	}
	dep := r.find("Deployment", "")
	spec := dig(dep, "spec", "template", "spec")
	if str(dig(spec, "initContainers", 0, "name")) != "wait" {
		t.Errorf("initContainers: %v", dig(spec, "initContainers"))
	}
	var names []string
	for _, c := range list(dig(spec, "containers")) {
		names = append(names, str(dig(c, "name")))
	}
	if strings.Join(names, ",") != "lsproxy,shipper" {
		t.Errorf("containers %v, want lsproxy,shipper", names)
	}
	if got := str(dig(dep, "metadata", "annotations", "secret.reloader.stakater.com/reload")); got == "" {
		t.Error("no Reloader annotation with secretReloader and an existing Secret")
	}
	if dig(dep, "spec", "template", "metadata", "labels", "team") != "payments" {
		t.Error("pods lack commonLabels")
	}
	sm := r.find("ServiceMonitor", "")
	tls := dig(sm, "spec", "endpoints", 0, "tlsConfig")
	if dig(tls, "insecureSkipVerify") == true || !strings.HasSuffix(str(dig(tls, "serverName")), ".svc") {
		t.Errorf("ServiceMonitor tlsConfig %v: want verification with serverName <control Service>.<namespace>.svc", tls)
	}
}

// TestConfigSchemaTyped: every lsproxy option has a typed entry under
// config in values.schema.json, of the kind its Go field has (durations as
// strings with a unit, whole numbers, booleans, lists), and nothing else.
func TestConfigSchemaTyped(t *testing.T) {
	var schema struct {
		Properties struct {
			Config struct {
				Properties map[string]struct {
					Type    []string `json:"type"`
					Pattern string   `json:"pattern"`
					Enum    []any    `json:"enum"`
				} `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	b, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	props := schema.Properties.Config.Properties
	rt := reflect.TypeFor[config.Config]()
	seen := map[string]bool{}
	for i := range rt.NumField() {
		f := rt.Field(i)
		key := f.Tag.Get("yaml")
		seen[key] = true
		p, ok := props[key]
		if !ok {
			t.Errorf("config.%s has no typed entry in values.schema.json", key)
			continue
		}
		want := ""
		switch {
		case f.Type == reflect.TypeFor[time.Duration]():
			want = "string"
			if p.Pattern == "" || !regexp.MustCompile(p.Pattern).MatchString("1h30m") || regexp.MustCompile(p.Pattern).MatchString("30") {
				t.Errorf("config.%s: a duration needs a pattern requiring the unit; got %q", key, p.Pattern)
			}
		case f.Type.Kind() == reflect.Bool || f.Type == reflect.TypeFor[*bool]():
			want = "boolean"
		case f.Type.Kind() == reflect.Int || f.Type.Kind() == reflect.Int64:
			want = "integer"
		case f.Type.Kind() == reflect.Float64:
			want = "number"
		case f.Type.Kind() == reflect.Slice:
			want = "array"
		case f.Type.Kind() == reflect.String:
			want = "string"
		}
		if len(p.Type) == 0 || p.Type[0] != want {
			t.Errorf("config.%s: schema type %v, want %s first (Go %v)", key, p.Type, want, f.Type)
		}
	}
	for key := range props {
		if !seen[key] {
			t.Errorf("values.schema.json types config.%s, which is no lsproxy option", key)
		}
	}
	for _, key := range []string{"provider", "environment", "log_format", "log_level", "client_auth"} {
		if len(props[key].Enum) == 0 {
			t.Errorf("config.%s: no enum", key)
		}
	}
	for _, key := range []string{"redirect_url", "upstream_url", "token_url", "authorize_url", "webhook_url", "success_url"} {
		if !strings.Contains(props[key].Pattern, "https?://") {
			t.Errorf("config.%s: no URL pattern", key)
		}
	}
}

// TestSchemaRejectsBadConfigValues: helm refuses config values lsproxy
// would refuse at start (the pod would crash-loop): a duration without a
// unit, a value outside an enum, a URL that is not one, a word for a
// number; and accepts the right ones.
func TestSchemaRejectsBadConfigValues(t *testing.T) {
	for _, tc := range []struct{ set, path string }{
		{"config.refresh_before=30", "/config/refresh_before"},
		{"config.log_format=xml", "/config/log_format"},
		{"config.provider=k-seris", "/config/provider"},
		{"config.redirect_url=lsproxy.example.com/oauth/callback", "/config/redirect_url"},
		{"config.breaker_failures=five", "/config/breaker_failures"},
	} {
		out, err := helmTemplate(t, []string{chartDir + "/ci/existing-secret-values.yaml"}, tc.set)
		if err == nil {
			t.Errorf("helm template --set %s rendered:\n%.300s", tc.set, out)
			continue
		}
		if !strings.Contains(err.Error(), tc.path) {
			t.Errorf("helm template --set %s: the refusal does not name %s: %v", tc.set, tc.path, err)
		}
	}
	if _, err := helmTemplate(t, []string{chartDir + "/ci/existing-secret-values.yaml"}, "config.refresh_before=45s", "config.log_format=console", "config.breaker_failures=7"); err != nil {
		t.Errorf("right config values refused: %v", err)
	}
}
