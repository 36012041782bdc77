// Package deploy tests lsproxy's deployment artefacts against the real
// binary and its real configuration code: the Dockerfile (its go build line
// is run as written, its HEALTHCHECK is run against a real listener), the
// .dockerignore (against the files `go list` says the build needs), the Helm
// chart (helm lint and helm template in every mode; the rendered container
// environment is loaded and validated by package config), the example
// manifests, the example Redis configuration (a real redis-server) and the
// metric names in docs/operations.md.
//
// Tests that need helm or redis-server skip when the tool is missing and
// the CI environment variable is unset; with CI set they fail instead.
package deploy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/proxy"
	"github.com/lsproxy/lsproxy/ratelimit"
)

const (
	chartDir    = "../helm/lsproxy"
	releaseName = "lsproxy"
	releaseNS   = "lsproxy"
	// commandLimit bounds every external command; the Dockerfile's go build
	// compiles every dependency afresh (-trimpath) on a first run.
	commandLimit = 10 * time.Minute
)

// requireTool returns the path of an external tool. When it is missing the
// test is skipped, unless the CI environment variable is set: then it fails.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s is not on PATH (with CI set this is a failure)", name)
	}
	t.Fatalf("%s is not on PATH and CI is set: .ci/run must install it", name)
	return ""
}

// run runs a command with a time bound and returns stdout, stderr and the error.
func run(t *testing.T, dir string, env []string, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no answer within %s", name, strings.Join(args, " "), commandLimit)
	}
	return stdout.String(), stderr.String(), err
}

// ---------------------------------------------------------------------------
// Chart modes

// mode is one way of installing the chart, checked by helm lint, helm
// template and the rendered-configuration tests.
type mode struct {
	name    string
	values  []string // values files, relative to this directory
	gateway bool     // mode: gateway (else sidecar)
	store   string   // none, standalone, sentinel, cluster
	want    map[string]string
}

var modes = []mode{
	{name: "default", gateway: true, store: "standalone",
		want: map[string]string{"LSPROXY_REDIS_URL": "redis://redis:6379/0"}},
	{name: "standalone", values: []string{chartDir + "/ci/standalone-values.yaml"}, gateway: true, store: "standalone",
		want: map[string]string{"LSPROXY_REDIS_URL": "rediss://redis-master.redis.svc:6380/2", "LSPROXY_REDIS_KEY_PREFIX": "lsproxy-ci:"}},
	{name: "sentinel", values: []string{chartDir + "/ci/sentinel-values.yaml"}, gateway: true, store: "sentinel",
		want: map[string]string{"LSPROXY_REDIS_SENTINEL_MASTER": "lsproxy", "LSPROXY_PROVIDER": "l-series", "LSPROXY_REDIS_TLS": "true"}},
	{name: "cluster", values: []string{chartDir + "/ci/cluster-values.yaml"}, gateway: true, store: "cluster",
		want: map[string]string{"LSPROXY_LISTEN": "[::]:8080", "LSPROXY_REDIS_CA_FILE": "/run/secrets/lsproxy-redis-ca/ca.pem",
			"LSPROXY_TLS_CERT_FILE": "/run/secrets/lsproxy-tls/proxy/tls.crt", "LSPROXY_CONTROL_TLS_KEY_FILE": "/run/secrets/lsproxy-tls/control/tls.key"}},
	{name: "existing-secret", values: []string{chartDir + "/ci/existing-secret-values.yaml"}, gateway: true, store: "standalone",
		want: map[string]string{"LSPROXY_REDIS_URL": "redis://redis.data.svc:6379/0"}},
	{name: "embedded", values: []string{chartDir + "/ci/embedded-values.yaml"}, gateway: true, store: "none",
		want: map[string]string{"LSPROXY_DATA_DIR": "/data"}},
	{name: "sidecar-plain", values: []string{chartDir + "/ci/sidecar-values.yaml"}, store: "standalone",
		want: map[string]string{"LSPROXY_LISTEN": "127.0.0.1:8080"}},
	{name: "sidecar-example", values: []string{"sidecar-values.yaml"}, store: "standalone",
		want: map[string]string{"LSPROXY_LISTEN": "127.0.0.1:8080", "LSPROXY_REDIS_URL": "redis://redis.shared.svc.cluster.local:6379/0"}},
}

func valuesArgs(files []string, sets ...string) []string {
	var args []string
	for _, f := range files {
		args = append(args, "-f", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

// helmTemplate renders the chart; it returns stdout and, on failure, an
// error carrying stderr.
func helmTemplate(t *testing.T, files []string, sets ...string) (string, error) {
	t.Helper()
	helm := requireTool(t, "helm")
	args := append([]string{"template", releaseName, chartDir, "--namespace", releaseNS}, valuesArgs(files, sets...)...)
	out, stderr, err := run(t, ".", os.Environ(), helm, args...)
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, stderr)
	}
	return out, nil
}

var (
	renderMu    sync.Mutex
	renderCache = map[string]string{}
)

// render returns mode m's manifests (helm runs once per mode and test binary).
func render(t *testing.T, m mode) manifests {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	out, ok := renderCache[m.name]
	if !ok {
		var err error
		out, err = helmTemplate(t, m.values)
		if err != nil {
			t.Fatalf("helm template (%s): %v", m.name, err)
		}
		renderCache[m.name] = out
	}
	return parseManifests(t, out)
}

// ---------------------------------------------------------------------------
// Manifests

type manifests struct {
	raw  string
	docs []map[string]any
}

func parseManifests(t *testing.T, s string) manifests {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(s))
	m := manifests{raw: s}
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered YAML does not parse: %v", err)
		}
		if doc != nil {
			m.docs = append(m.docs, doc)
		}
	}
	return m
}

func (m manifests) all(kind string) []map[string]any {
	var out []map[string]any
	for _, d := range m.docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
}

// find returns the object of kind named name ("" = the only one), or nil.
func (m manifests) find(kind, name string) map[string]any {
	for _, d := range m.all(kind) {
		if name == "" || str(dig(d, "metadata", "name")) == name {
			return d
		}
	}
	return nil
}

// dig walks maps (string keys) and lists (int indexes); nil when absent.
func dig(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k < 0 || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func list(v any) []any { l, _ := v.([]any); return l }

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

func byName(items []any, name string) map[string]any {
	for _, it := range items {
		if str(dig(it, "name")) == name {
			return obj(it)
		}
	}
	return nil
}

// pod is the Deployment's pod template and its lsproxy container.
type pod struct {
	spec    map[string]any
	lsproxy map[string]any
	native  bool // lsproxy runs as a native sidecar init container
	apps    []map[string]any
	labels  map[string]any
}

func deploymentPod(t *testing.T, m manifests) pod {
	t.Helper()
	deps := m.all("Deployment")
	if len(deps) != 1 {
		t.Fatalf("want one Deployment, got %d", len(deps))
	}
	spec := obj(dig(deps[0], "spec", "template", "spec"))
	p := pod{spec: spec, labels: obj(dig(deps[0], "spec", "template", "metadata", "labels"))}
	if c := byName(list(spec["initContainers"]), "lsproxy"); c != nil {
		p.lsproxy, p.native = c, true
	}
	for _, c := range list(spec["containers"]) {
		if str(dig(c, "name")) == "lsproxy" {
			if p.lsproxy != nil {
				t.Fatal("lsproxy is both an init container and a container")
			}
			p.lsproxy = obj(c)
			continue
		}
		p.apps = append(p.apps, obj(c))
	}
	if p.lsproxy == nil {
		t.Fatal("no lsproxy container in the Deployment")
	}
	return p
}

// selects reports whether a matchLabels selector selects labels.
func selects(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if str(labels[k]) != str(v) {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// helm lint and helm template, every mode

func TestHelmLint(t *testing.T) {
	helm := requireTool(t, "helm")
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", chartDir}, valuesArgs(m.values)...)
			out, stderr, err := run(t, ".", os.Environ(), helm, args...)
			if err != nil {
				t.Fatalf("helm lint --strict: %v\n%s%s", err, out, stderr)
			}
		})
	}
}

func TestHelmTemplate(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := render(t, m)
			p := deploymentPod(t, r)
			checkPod(t, m, r, p)
			checkServices(t, m, r, p)
			checkPolicies(t, m, r, p)
			checkRoutes(t, r)

			cm := r.find("ConfigMap", releaseName)
			if cm == nil {
				t.Fatal("no ConfigMap named after the release")
			}
			data := obj(cm["data"])
			for k, want := range m.want {
				if got := str(data[k]); got != want {
					t.Errorf("ConfigMap %s = %q, want %q", k, got, want)
				}
			}
			storeVars := map[string]string{
				"none": "LSPROXY_DATA_DIR", "standalone": "LSPROXY_REDIS_URL",
				"sentinel": "LSPROXY_REDIS_SENTINEL_ADDRS", "cluster": "LSPROXY_REDIS_CLUSTER_ADDRS",
			}
			for store, v := range storeVars {
				if _, set := data[v]; set != (store == m.store) {
					t.Errorf("ConfigMap sets %s: %v, want %v (redis.mode %s)", v, set, store == m.store, m.store)
				}
			}
			for k := range data {
				if isSecretVar(k) {
					t.Errorf("ConfigMap carries secret variable %s", k)
				}
			}
		})
	}
}

// isSecretVar reports whether an LSPROXY_* variable holds a secret value
// (as opposed to a path to one).
func isSecretVar(name string) bool {
	switch name {
	case "LSPROXY_CLIENT_SECRET", "LSPROXY_ADMIN_TOKEN", "LSPROXY_ENCRYPTION_KEY", "LSPROXY_ENCRYPTION_KEYS",
		"LSPROXY_REDIS_PASSWORD", "LSPROXY_WEBHOOK_SECRET", "LSPROXY_CLIENT_KEYS", "LSPROXY_CLIENT_ID":
		return true
	}
	return false
}

func checkPod(t *testing.T, m mode, r manifests, p pod) {
	t.Helper()
	c := p.lsproxy

	// Probes: liveness and startup /healthz, readiness /readyz, on the
	// control port, over HTTPS when the control listener has TLS.
	cm := obj(dig(r.find("ConfigMap", releaseName), "data"))
	scheme := ""
	if cm["LSPROXY_CONTROL_TLS_CERT_FILE"] != nil {
		scheme = "HTTPS"
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
		if got := str(dig(c, probe, "httpGet", "scheme")); got != scheme {
			t.Errorf("%s scheme = %q, want %q", probe, got, scheme)
		}
		if got := str(dig(c, probe, "httpGet", "path")); got != want {
			t.Errorf("%s path = %q, want %q", probe, got, want)
		}
		if got := str(dig(c, probe, "httpGet", "port")); got != "control" {
			t.Errorf("%s port = %q, want control", probe, got)
		}
	}
	if p.native && str(c["restartPolicy"]) != "Always" {
		t.Error("native sidecar without restartPolicy: Always")
	}
	if !m.gateway && len(p.apps) == 0 {
		t.Error("sidecar mode without app containers")
	}

	// Security context: non-root, read-only root, no capabilities, seccomp.
	sc := obj(c["securityContext"])
	if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false {
		t.Errorf("container securityContext = %v", sc)
	}
	if drop := list(dig(sc, "capabilities", "drop")); !slices.Contains(drop, any("ALL")) {
		t.Errorf("capabilities.drop = %v, want ALL", drop)
	}
	psc := obj(p.spec["securityContext"])
	if psc["runAsNonRoot"] != true || str(psc["runAsUser"]) == "0" || str(dig(psc, "seccompProfile", "type")) != "RuntimeDefault" {
		t.Errorf("pod securityContext = %v", psc)
	}
	if p.spec["automountServiceAccountToken"] != false {
		t.Error("the pod mounts a service account token; lsproxy needs none")
	}

	// Resources and spreading.
	if dig(c, "resources", "requests", "cpu") == nil || dig(c, "resources", "limits", "memory") == nil {
		t.Errorf("resources = %v, want a cpu request and a memory limit", c["resources"])
	}
	tsc := list(p.spec["topologySpreadConstraints"])
	if len(tsc) == 0 {
		t.Error("no topologySpreadConstraints")
	}
	for _, s := range tsc {
		if !selects(obj(dig(s, "labelSelector", "matchLabels")), p.labels) {
			t.Errorf("topology spread selector %v does not select the pods", dig(s, "labelSelector"))
		}
	}

	// Replicas: at least 2 unless on the embedded store.
	dep := r.all("Deployment")[0]
	replicas, _ := dig(dep, "spec", "replicas").(int)
	if hpa := r.find("HorizontalPodAutoscaler", ""); hpa != nil {
		if dig(dep, "spec", "replicas") != nil {
			t.Error("the Deployment sets replicas while an HPA scales it")
		}
		replicas, _ = dig(hpa, "spec", "minReplicas").(int)
	}
	switch {
	case m.store == "none" && replicas != 1:
		t.Errorf("embedded store with %d replicas", replicas)
	case m.store != "none" && replicas < 2:
		t.Errorf("replicas = %d, want at least 2", replicas)
	}
	strategy := str(dig(dep, "spec", "strategy", "type"))
	switch {
	case m.store == "none" && strategy != "Recreate":
		t.Errorf("embedded store strategy = %q, want Recreate", strategy)
	case m.store != "none" && (strategy != "RollingUpdate" || str(dig(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable")) != "0"):
		t.Errorf("strategy = %v, want RollingUpdate with maxUnavailable 0", dig(dep, "spec", "strategy"))
	}

	// Secrets: never literal; files under a read-only secret mount, or secretKeyRef.
	mounts := map[string]map[string]any{} // mountPath -> volume
	for _, vm := range list(c["volumeMounts"]) {
		vol := byName(list(p.spec["volumes"]), str(dig(vm, "name")))
		if vol == nil {
			t.Errorf("volumeMount %v has no volume", vm)
			continue
		}
		if vol["secret"] != nil && dig(vm, "readOnly") != true {
			t.Errorf("secret volume %s mounted writable", dig(vm, "name"))
		}
		mounts[str(dig(vm, "mountPath"))] = vol
	}
	env := list(c["env"])
	files := map[string]string{} // LSPROXY_*_FILE variables, from env and the ConfigMap
	for k, v := range cm {
		files[k] = str(v)
	}
	for _, e := range env {
		name := str(dig(e, "name"))
		if isSecretVar(name) {
			if dig(e, "value") != nil || dig(e, "valueFrom", "secretKeyRef", "key") == nil {
				t.Errorf("%s is not read from a Secret: %v", name, e)
			}
		}
		files[name] = str(dig(e, "value"))
	}
	for name, file := range files {
		if strings.HasPrefix(name, "LSPROXY_") && strings.HasSuffix(name, "_FILE") {
			if vol := mounts[path.Dir(file)]; vol == nil || vol["secret"] == nil {
				t.Errorf("%s=%s is not in a mounted Secret", name, file)
			}
		}
	}
	for _, want := range []string{"LSPROXY_CLIENT_ID", "LSPROXY_CLIENT_SECRET_FILE", "LSPROXY_ENCRYPTION_KEY_FILE", "LSPROXY_ADMIN_TOKEN_FILE"} {
		if byName(env, want) == nil {
			t.Errorf("lsproxy container does not set %s", want)
		}
	}
	if dig(mounts["/tmp"], "emptyDir") == nil {
		t.Error("no writable /tmp (emptyDir) next to the read-only root filesystem")
	}
	if m.store == "none" && dig(mounts["/data"], "persistentVolumeClaim", "claimName") == nil {
		t.Error("embedded store without a PersistentVolumeClaim on /data")
	}

	// Graceful shutdown fits in the grace period.
	grace, _ := p.spec["terminationGracePeriodSeconds"].(int)
	preStop, _ := dig(c, "lifecycle", "preStop", "sleep", "seconds").(int)
	shutdown := config.Default().ShutdownTimeout
	if s := str(dig(r.find("ConfigMap", releaseName), "data", "LSPROXY_SHUTDOWN_TIMEOUT")); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LSPROXY_SHUTDOWN_TIMEOUT %q: %v", s, err)
		}
		shutdown = d
	}
	// After the drain, refreshes get their own budget (SPEC §3 rule 16).
	tokenTimeout := config.Default().TokenTimeout
	if s := str(dig(r.find("ConfigMap", releaseName), "data", "LSPROXY_TOKEN_TIMEOUT")); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LSPROXY_TOKEN_TIMEOUT %q: %v", s, err)
		}
		tokenTimeout = d
	}
	refreshes := auth.ShutdownBudget(tokenTimeout)
	if time.Duration(grace)*time.Second <= time.Duration(preStop)*time.Second+shutdown+refreshes {
		t.Errorf("terminationGracePeriodSeconds %d <= preStop %ds + shutdown_timeout %s + refresh budget %s", grace, preStop, shutdown, refreshes)
	}
	if preStop == 0 && m.gateway {
		t.Error("no preStop sleep: endpoints may still route to a stopping pod")
	}
}

func checkServices(t *testing.T, m mode, r manifests, p pod) {
	t.Helper()
	control := r.find("Service", releaseName+"-control")
	if control == nil {
		t.Fatal("no control Service")
	}
	if !selects(obj(dig(control, "spec", "selector")), p.labels) {
		t.Error("the control Service does not select the pods")
	}
	if got := str(dig(control, "spec", "ports", 0, "targetPort")); got != "control" {
		t.Errorf("control Service targetPort = %q", got)
	}
	proxySvc := r.find("Service", releaseName)
	if m.gateway {
		if proxySvc == nil || str(dig(proxySvc, "spec", "ports", 0, "targetPort")) != "proxy" {
			t.Fatalf("gateway without a proxy Service on targetPort proxy: %v", proxySvc)
		}
		if !selects(obj(dig(proxySvc, "spec", "selector")), p.labels) {
			t.Error("the proxy Service does not select the pods")
		}
	} else if proxySvc != nil {
		t.Error("sidecar mode renders a proxy Service; the proxy is loopback-only")
	}
	if sm := r.find("ServiceMonitor", ""); sm != nil {
		sel := obj(dig(sm, "spec", "selector", "matchLabels"))
		if !selects(sel, obj(dig(control, "metadata", "labels"))) {
			t.Error("the ServiceMonitor does not select the control Service")
		}
		if proxySvc != nil && selects(sel, obj(dig(proxySvc, "metadata", "labels"))) {
			t.Error("the ServiceMonitor also selects the proxy Service")
		}
		if str(dig(sm, "spec", "endpoints", 0, "path")) != "/metrics" || str(dig(sm, "spec", "endpoints", 0, "port")) != "control" {
			t.Errorf("ServiceMonitor endpoint = %v", dig(sm, "spec", "endpoints", 0))
		}
	}
	if s := r.find("Secret", ""); s != nil {
		data := obj(s["stringData"])
		for _, k := range []string{"client-id", "client-secret", "encryption-key", "admin-token"} {
			if str(data[k]) == "" {
				t.Errorf("chart Secret lacks %s", k)
			}
		}
	}
}

func checkPolicies(t *testing.T, m mode, r manifests, p pod) {
	t.Helper()
	pdb := r.find("PodDisruptionBudget", "")
	if pdb == nil || !selects(obj(dig(pdb, "spec", "selector", "matchLabels")), p.labels) {
		t.Errorf("no PodDisruptionBudget selecting the pods: %v", pdb)
	}
	np := r.find("NetworkPolicy", "")
	if np == nil || !selects(obj(dig(np, "spec", "podSelector", "matchLabels")), p.labels) {
		t.Fatalf("no NetworkPolicy selecting the pods: %v", np)
	}
	var ports []string
	for _, rule := range list(dig(np, "spec", "ingress")) {
		for _, port := range list(dig(rule, "ports")) {
			ports = append(ports, str(dig(port, "port")))
		}
	}
	if !slices.Contains(ports, "control") || slices.Contains(ports, "proxy") != m.gateway {
		t.Errorf("NetworkPolicy ingress ports = %v (gateway %v)", ports, m.gateway)
	}
	for _, app := range p.apps {
		for _, port := range list(app["ports"]) {
			if !slices.Contains(ports, str(dig(port, "containerPort"))) {
				t.Errorf("NetworkPolicy blocks app port %v", dig(port, "containerPort"))
			}
		}
	}
}

// checkRoutes: the Ingress and HTTPRoute expose exactly /oauth/start and
// /oauth/callback, Exact, to the control Service.
func checkRoutes(t *testing.T, r manifests) {
	t.Helper()
	want := []string{"/oauth/callback", "/oauth/start"}
	for _, ing := range r.all("Ingress") {
		var paths []string
		for _, rule := range list(dig(ing, "spec", "rules")) {
			for _, p := range list(dig(rule, "http", "paths")) {
				paths = append(paths, str(dig(p, "path")))
				if str(dig(p, "pathType")) != "Exact" || str(dig(p, "backend", "service", "name")) != releaseName+"-control" {
					t.Errorf("Ingress path %v: want Exact to the control Service", p)
				}
			}
		}
		slices.Sort(paths)
		if !slices.Equal(paths, want) {
			t.Errorf("Ingress paths = %v, want %v", paths, want)
		}
	}
	for _, route := range r.all("HTTPRoute") {
		var paths []string
		for _, rule := range list(dig(route, "spec", "rules")) {
			for _, match := range list(dig(rule, "matches")) {
				paths = append(paths, str(dig(match, "path", "value")))
				if str(dig(match, "path", "type")) != "Exact" {
					t.Errorf("HTTPRoute match %v is not Exact", match)
				}
			}
			if str(dig(rule, "backendRefs", 0, "name")) != releaseName+"-control" {
				t.Errorf("HTTPRoute backend = %v", dig(rule, "backendRefs"))
			}
		}
		slices.Sort(paths)
		if !slices.Equal(paths, want) {
			t.Errorf("HTTPRoute paths = %v, want %v", paths, want)
		}
	}
}

// TestSecretValuesOnlyInSecret renders the mode whose values hold secrets
// and checks that no secret value appears outside the Secret object.
func TestSecretValuesOnlyInSecret(t *testing.T) {
	m := modes[slices.IndexFunc(modes, func(m mode) bool { return m.name == "standalone" })]
	raw, err := os.ReadFile(m.values[0])
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Secrets map[string]any `yaml:"secrets"`
		Redis   struct {
			Auth struct {
				Password string `yaml:"password"`
			} `yaml:"auth"`
		} `yaml:"redis"`
	}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	secretValues := []string{v.Redis.Auth.Password}
	for k, val := range v.Secrets {
		switch val := val.(type) {
		case string:
			if k != "existingSecret" {
				secretValues = append(secretValues, val)
			}
		case []any:
			for _, s := range val {
				secretValues = append(secretValues, str(s))
			}
		}
	}
	r := render(t, m)
	secrets := 0
	for _, d := range r.docs {
		if d["kind"] == "Secret" {
			secrets++
			continue
		}
		b, err := yaml.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secretValues {
			if s != "" && bytes.Contains(b, []byte(s)) {
				t.Errorf("%s %s contains a secret value from secrets.*", d["kind"], dig(d, "metadata", "name"))
			}
		}
	}
	if secrets != 1 {
		t.Errorf("rendered %d Secrets, want 1", secrets)
	}
}

// ---------------------------------------------------------------------------
// The rendered configuration is one the binary accepts

// fakeExternalSecret stands in for Secrets the chart does not create.
var fakeExternalSecret = withTLS(map[string]string{
	"client-id":      "fake-client-id",
	"client-secret":  "fake-client-secret",
	"encryption-key": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
	"admin-token":    "fake-admin-token",
	"client-keys":    "app:" + strings.Repeat("ab", 32) + ":*",
	"redis-password": "fake-redis-password",
	"password":       "fake-redis-password",
	"ca.crt":         "not read by config.Load",
	"ca.pem":         "not read by config.Load",
})

// withTLS adds a self-signed certificate and its key as tls.crt and
// tls.key (a kubernetes.io/tls Secret): Validate loads listener key pairs.
func withTLS(m map[string]string) map[string]string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lsproxy.test"},
		DNSNames:     []string{"lsproxy.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	m["tls.crt"] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	m["tls.key"] = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return m
}

// containerEnviron builds the environment Kubernetes would give container c
// of pod spec: envFrom ConfigMaps and Secrets, env values and secretKeyRefs.
// Secret volumes are written under a temporary root, and *_FILE values
// that point into them are rewritten to match. Secrets are the rendered
// ones, or secret(name) for those the chart does not create.
func containerEnviron(t *testing.T, r manifests, spec, c map[string]any, secret func(name string) map[string]string) []string {
	t.Helper()
	root := t.TempDir()
	secretData := func(name string) map[string]string {
		if s := r.find("Secret", name); s != nil {
			data := map[string]string{}
			for k, v := range obj(s["stringData"]) {
				data[k] = str(v)
			}
			for k, v := range obj(s["data"]) {
				b, err := base64.StdEncoding.DecodeString(str(v))
				if err != nil {
					t.Fatalf("Secret %s key %s: %v", name, k, err)
				}
				data[k] = string(b)
			}
			return data
		}
		return secret(name)
	}

	var mountPaths []string
	for _, vm := range list(c["volumeMounts"]) {
		vol := byName(list(spec["volumes"]), str(dig(vm, "name")))
		name := str(dig(vol, "secret", "secretName"))
		if name == "" {
			continue
		}
		mp := str(dig(vm, "mountPath"))
		mountPaths = append(mountPaths, mp)
		dir := filepath.Join(root, mp)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		data := secretData(name)
		files := map[string]string{} // key -> path in the volume
		if items := list(dig(vol, "secret", "items")); len(items) > 0 {
			for _, it := range items {
				files[str(dig(it, "key"))] = str(dig(it, "path"))
			}
		} else {
			for k := range data {
				files[k] = k
			}
		}
		for key, p := range files {
			v, ok := data[key]
			if !ok {
				t.Errorf("Secret %s has no key %s (mounted at %s)", name, key, mp)
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, p), []byte(v+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}

	// inVolume maps a path inside a mounted Secret to the written copy.
	inVolume := func(v string) string {
		for _, mp := range mountPaths {
			if strings.HasPrefix(v, mp+"/") {
				return filepath.Join(root, v)
			}
		}
		return v
	}
	var env []string // env first: it wins over envFrom, and config.Load keeps the first
	for _, e := range list(c["env"]) {
		name := str(dig(e, "name"))
		if ref := obj(dig(e, "valueFrom", "secretKeyRef")); ref != nil {
			v, ok := secretData(str(ref["name"]))[str(ref["key"])]
			if !ok {
				if ref["optional"] != true {
					t.Errorf("%s: Secret %s has no key %s", name, ref["name"], ref["key"])
				}
				continue
			}
			env = append(env, name+"="+v)
			continue
		}
		if dig(e, "valueFrom") != nil {
			continue // fieldRef, resourceFieldRef: not lsproxy options
		}
		env = append(env, name+"="+inVolume(str(dig(e, "value"))))
	}
	for _, ef := range list(c["envFrom"]) {
		prefix := str(dig(ef, "prefix"))
		if name := str(dig(ef, "configMapRef", "name")); name != "" {
			cm := r.find("ConfigMap", name)
			if cm == nil {
				t.Fatalf("envFrom ConfigMap %s is not rendered", name)
			}
			for _, k := range slices.Sorted(maps.Keys(obj(cm["data"]))) {
				env = append(env, prefix+k+"="+inVolume(str(dig(cm, "data", k))))
			}
		}
		if name := str(dig(ef, "secretRef", "name")); name != "" {
			data := secretData(name)
			for _, k := range slices.Sorted(maps.Keys(data)) {
				env = append(env, prefix+k+"="+data[k])
			}
		}
	}
	return env
}

func TestRenderedConfigValidates(t *testing.T) {
	external := func(string) map[string]string { return fakeExternalSecret }
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := render(t, m)
			p := deploymentPod(t, r)
			env := containerEnviron(t, r, p.spec, p.lsproxy, external)
			cfg, err := config.Load("", env)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			if problems := cfg.Validate(config.ModeServe); len(problems) > 0 {
				t.Fatalf("lsproxy would refuse to start: %v", errors.Join(problems...))
			}
			if cfg.ClientSecret == "" || cfg.EncryptionKey == "" || cfg.AdminToken == "" {
				t.Error("client secret, encryption key or admin token not loaded from the Secret")
			}
			if m.store != "none" && cfg.RedisURL == "" && len(cfg.RedisSentinelAddrs) == 0 && len(cfg.RedisClusterAddrs) == 0 {
				t.Error("no Redis configured")
			}
			if m.store == "none" && cfg.DataDir != "/data" {
				t.Errorf("DataDir = %q, want the volume /data", cfg.DataDir)
			}
			if !m.gateway && !strings.HasPrefix(cfg.Listen, "127.0.0.1:") {
				t.Errorf("sidecar proxy listens on %s, want loopback", cfg.Listen)
			}
			if m.gateway && strings.HasPrefix(cfg.Listen, "127.") {
				t.Errorf("gateway proxy listens on %s: unreachable from other pods", cfg.Listen)
			}
			if port := str(dig(byName(list(p.lsproxy["ports"]), "control"), "containerPort")); !strings.HasSuffix(cfg.ControlListen, ":"+port) {
				t.Errorf("control listener %s is not the probed container port %s", cfg.ControlListen, port)
			}
		})
	}

	// The chart's refusal of a keyless gateway mirrors the binary's.
	t.Run("gateway-without-client-keys", func(t *testing.T) {
		r := render(t, modes[0])
		p := deploymentPod(t, r)
		noKeys := maps.Clone(fakeExternalSecret)
		delete(noKeys, "client-keys")
		env := containerEnviron(t, r, p.spec, p.lsproxy, func(string) map[string]string { return noKeys })
		cfg, err := config.Load("", env)
		if err != nil {
			t.Fatal(err)
		}
		problems := errors.Join(cfg.Validate(config.ModeServe)...)
		if problems == nil || !strings.Contains(problems.Error(), "LSPROXY_CLIENT_KEYS") {
			t.Fatalf("want the caller-authentication problem, got %v", problems)
		}
	})
}

// ---------------------------------------------------------------------------
// LSPROXY_* names

var envNameRE = regexp.MustCompile(`LSPROXY_[A-Z0-9][A-Z0-9_]*[A-Z0-9]`)

func knownNames() map[string]bool {
	known := map[string]bool{}
	for _, n := range config.Names() {
		known[n] = true
	}
	return known
}

// TestEnvNamesKnown: every LSPROXY_* variable in the rendered manifests of
// every mode, the chart's files, the example manifests, the Dockerfile and
// docs/operations.md is one lsproxy knows (an unknown one is silently ignored).
func TestEnvNamesKnown(t *testing.T) {
	known := knownNames()
	check := func(where, text string) {
		for _, n := range envNameRE.FindAllString(text, -1) {
			if !known[n] {
				t.Errorf("%s: %s is not an lsproxy variable (config.Names)", where, n)
			}
		}
	}
	for _, m := range modes {
		check("helm template ("+m.name+")", render(t, m).raw)
	}
	files := []string{"../Dockerfile", "../docs/operations.md"}
	for _, root := range []string{chartDir, "."} {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasSuffix(p, "_test.go") {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		check(f, string(b))
	}
}

// helperList extracts the quoted strings of a named template in _helpers.tpl.
func helperList(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(chartDir + "/templates/_helpers.tpl")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	head := `{{- define "` + name + `" -}}`
	start := strings.Index(s, head)
	if start < 0 {
		t.Fatalf("no template %s in _helpers.tpl", name)
	}
	body := s[start+len(head):]
	body = body[:strings.Index(body, "{{- end }}")]
	var out []string
	for _, m := range regexp.MustCompile(`"([a-z0-9_]+)"`).FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestChartCoversEveryOption: the options accepted under values "config"
// and those the chart owns partition lsproxy's options exactly, and every
// option reaches the container: through "config", or a variable a template
// sets. The direct forms of file-backed secrets are deliberately unused.
func TestChartCoversEveryOption(t *testing.T) {
	configKeys := helperList(t, "lsproxy.configKeys")
	owned := map[string]bool{} // the dict's keys: its values (where to set them) never match
	for _, k := range helperList(t, "lsproxy.chartOwnedKeys") {
		owned[k] = true
	}
	var allKeys []string
	for _, n := range config.Names() {
		allKeys = append(allKeys, strings.ToLower(strings.TrimPrefix(n, config.EnvPrefix)))
	}
	for _, k := range configKeys {
		if !slices.Contains(allKeys, k) {
			t.Errorf("lsproxy.configKeys lists %q, not an lsproxy option", k)
		}
		if owned[k] {
			t.Errorf("%q is both a config key and chart-owned", k)
		}
	}
	for _, k := range allKeys {
		if !slices.Contains(configKeys, k) && !owned[k] {
			t.Errorf("option %q is neither accepted under values config nor set by the chart (add it to lsproxy.configKeys or lsproxy.chartOwnedKeys)", k)
		}
	}

	templated := map[string]bool{}
	entries, err := os.ReadDir(chartDir + "/templates")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(chartDir, "templates", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range envNameRE.FindAllString(string(b), -1) {
			templated[n] = true
		}
	}
	unused := map[string]bool{ // file-backed or secretKeyRef'd instead
		"LSPROXY_CLIENT_SECRET": true, "LSPROXY_ADMIN_TOKEN": true, "LSPROXY_ENCRYPTION_KEY": true,
		"LSPROXY_REDIS_PASSWORD": true, "LSPROXY_WEBHOOK_SECRET_FILE": true,
		"LSPROXY_CONSOLE_OIDC_CLIENT_SECRET_FILE": true,
	}
	for _, n := range config.Names() {
		key := strings.ToLower(strings.TrimPrefix(n, config.EnvPrefix))
		if !slices.Contains(configKeys, key) && !templated[n] && !unused[n] {
			t.Errorf("%s is chart-owned but no template sets it", n)
		}
	}
}

// ---------------------------------------------------------------------------
// Render failures: every refusal, with a message naming the value to fix

func TestRenderFailures(t *testing.T) {
	create := []string{"secrets.create=true", "secrets.clientId=id", "secrets.clientSecret=s",
		"secrets.encryptionKey=" + fakeExternalSecret["encryption-key"], "secrets.adminToken=a", "config.allow_unauthenticated=true"}
	cases := []struct {
		name   string
		sets   []string
		want   string
		secret string // must not appear in the message
		values string // a values file's content, when --set cannot express it
	}{
		{"embedded with two replicas", []string{"redis.mode=none"}, "embedded store (redis.mode: none) is single-process, so it cannot serve replicaCount: 2", "", ""},
		{"embedded with autoscaling", []string{"redis.mode=none", "replicaCount=1", "autoscaling.enabled=true"}, "with autoscaling.enabled", "", ""},
		{"embedded without a volume", []string{"redis.mode=none", "replicaCount=1", "persistence.enabled=false"}, "needs persistence.enabled", "", ""},
		// values.schema.json refuses these before the templates' own checks.
		{"unknown mode", []string{"mode=mesh"}, "at '/mode': value must be one of 'gateway', 'sidecar'", "", ""},
		{"unknown redis mode", []string{"redis.mode=memcached"}, "at '/redis/mode': value must be one of 'none', 'standalone', 'sentinel', 'cluster'", "", ""},
		{"redis URL scheme", []string{"redis.standalone.url=http://redis:6379"}, "redis.standalone.url must be a redis:// or rediss:// URL", "", ""},
		{"redis URL with password", []string{"redis.standalone.url=redis://:hunter2secret@redis:6379/0"}, "must not contain a password; use redis.auth", "hunter2secret", ""},
		{"redis CA without TLS", []string{"redis.tls.caSecret=ca"}, "needs a rediss://", "", ""},
		{"sentinel without addresses", []string{"redis.mode=sentinel"}, "needs redis.sentinel.masterName and redis.sentinel.addrs", "", ""},
		{"cluster without addresses", []string{"redis.mode=cluster"}, "needs redis.cluster.addrs", "", ""},
		{"key prefix with a hash tag", nil, "must not contain { or }", "", "redis:\n  keyPrefix: \"app:{x}:\"\n"},
		{"Redis TLS flag with a URL", []string{"redis.tls.enabled=true"}, "with redis.mode: standalone use a rediss:// redis.standalone.url", "", ""},
		{"unknown config key", []string{"config.refesh_before=1s"}, "config.refesh_before is not an lsproxy option", "", ""},
		{"chart-owned config key", []string{"config.redis_url=redis://x:6379"}, "config.redis_url is set by the chart; use redis.mode", "", ""},
		{"chart-owned secret key", []string{"config.client_secret=shhh-value"}, "config.client_secret is set by the chart; use secrets.clientSecret", "shhh-value", ""},
		{"created Secret without encryption key", append(slices.Clone(create), "secrets.encryptionKey="), "secrets.encryptionKey is required", "", ""},
		{"created Secret with a short key", append(slices.Clone(create), "secrets.encryptionKey=c2hvcnRrZXk="), "secrets.encryptionKey must be standard base64 of exactly 32 bytes", "c2hvcnRrZXk=", ""},
		{"created Secret with a bad old key", append(slices.Clone(create), "secrets.previousEncryptionKeys[0]=bm90MzI="), "secrets.previousEncryptionKeys[0] must be", "bm90MzI=", ""},
		{"created Secret, keyless gateway", append(slices.Clone(create), "config.allow_unauthenticated=false"), "needs caller keys", "", ""},
		{"created Secret, Redis auth without password", append(slices.Clone(create), "redis.auth.enabled=true"), "redis.auth.enabled needs redis.auth.password", "", ""},
		{"ingress without redirect URL", []string{"ingress.enabled=true"}, "ingress and httpRoute need config.redirect_url", "", ""},
		{"ingress with another callback path", []string{"ingress.enabled=true", "config.redirect_url=https://x.example.com/lsproxy/oauth/callback"}, `path must be /oauth/callback`, "", ""},
		{"httpRoute without parents", []string{"httpRoute.enabled=true", "config.redirect_url=https://x.example.com/oauth/callback"}, "needs httpRoute.parentRefs", "", ""},
		{"sidecar without apps", []string{"mode=sidecar"}, "mode: sidecar needs sidecar.containers", "", ""},
		{"app Service in gateway mode", []string{"sidecar.service.enabled=true"}, "sidecar.service is for mode: sidecar", "", ""},
		{"grace period below the drain and refreshes", []string{"terminationGracePeriodSeconds=45"}, "terminationGracePeriodSeconds (45) must exceed lifecycle.preStopSleepSeconds (5) plus config.shutdown_timeout (25s) plus the refresh budget (config.token_timeout + 10s = 20s)", "", ""},
		{"drain above the grace period", []string{"config.shutdown_timeout=1m30s"}, "plus config.shutdown_timeout (90s)", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var files []string
			if tc.values != "" {
				f := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(f, []byte(tc.values), 0o600); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			_, err := helmTemplate(t, files, tc.sets...)
			if err == nil {
				t.Fatalf("helm template succeeded with %v; want a failure", tc.sets)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("error echoes the secret value: %v", err)
			}
		})
	}
}

// TestValuesDocumented: every key of values.yaml down to the second level
// (below free-form objects) has a comment.
func TestValuesDocumented(t *testing.T) {
	b, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	freeForm := map[string]bool{"podSecurityContext": true, "securityContext": true, "resources": true, "probes": true}
	var walk func(n *yaml.Node, prefix string, depth int)
	walk = func(n *yaml.Node, prefix string, depth int) {
		if n.Kind != yaml.MappingNode || depth > 2 {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			documented := k.HeadComment != "" || k.LineComment != "" || v.LineComment != ""
			// A comment block may document a run of keys ("# -- Bounds of ...").
			if !documented && i >= 2 {
				prevV := n.Content[i-1]
				documented = n.Content[i-2].HeadComment != "" && prevV.Kind == yaml.ScalarNode && k.Line == prevV.Line+1
			}
			if !documented {
				t.Errorf("values.yaml: %s has no comment", key)
			}
			if !freeForm[k.Value] {
				walk(v, key+".", depth+1)
			}
		}
	}
	walk(doc.Content[0], "", 1)
}

// ---------------------------------------------------------------------------
// Example manifests

// TestSidecarExample checks deploy/sidecar.yaml: an app and lsproxy in one
// pod, lsproxy on loopback (no caller keys needed), a shared Redis, probes,
// a hardened security context, and a configuration lsproxy accepts.
func TestSidecarExample(t *testing.T) {
	b, err := os.ReadFile("sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := parseManifests(t, string(b))
	p := deploymentPod(t, r)
	if !p.native || str(p.lsproxy["restartPolicy"]) != "Always" {
		t.Error("lsproxy is not a native sidecar (init container, restartPolicy Always)")
	}
	if len(p.apps) == 0 {
		t.Fatal("no app container")
	}
	env := containerEnviron(t, r, p.spec, p.lsproxy, func(string) map[string]string {
		s := maps.Clone(fakeExternalSecret)
		delete(s, "client-keys") // loopback needs none
		return s
	})
	cfg, err := config.Load("", env)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	if problems := cfg.Validate(config.ModeServe); len(problems) > 0 {
		t.Fatalf("lsproxy would refuse to start: %v", errors.Join(problems...))
	}
	if cfg.Listen != "127.0.0.1:8080" {
		t.Errorf("sidecar listens on %s, want 127.0.0.1:8080", cfg.Listen)
	}
	if !strings.HasPrefix(cfg.RedisURL, "redis") || cfg.RedisPassword == "" {
		t.Error("sidecar example does not use the shared Redis with a password")
	}
	appEnv := fmt.Sprint(p.apps[0]["env"])
	if !strings.Contains(appEnv, "http://127.0.0.1:8080") {
		t.Errorf("the app is not pointed at http://127.0.0.1:8080: %s", appEnv)
	}
	m := mode{name: "sidecar.yaml", store: "standalone"}
	checkPod(t, m, manifests{docs: append(r.docs, map[string]any{"kind": "ConfigMap", "metadata": map[string]any{"name": releaseName}})}, p)
	if svc := r.find("Service", "orders-sync-lsproxy-control"); svc == nil || !selects(obj(dig(svc, "spec", "selector")), p.labels) {
		t.Error("no control Service selecting the pods (admin API, OAuth callback)")
	}
}

// TestRedisExampleConfig starts a real redis-server with deploy/redis.yaml's
// redis.conf (port, directory and bind overridden) and checks the
// durability settings lsproxy needs.
func TestRedisExampleConfig(t *testing.T) {
	server := requireTool(t, "redis-server")
	b, err := os.ReadFile("redis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cm := parseManifests(t, string(b)).find("ConfigMap", "redis")
	conf := str(dig(cm, "data", "redis.conf"))
	if conf == "" {
		t.Fatal("no redis.conf in deploy/redis.yaml")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "redis.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, server, filepath.Join(dir, "redis.conf"),
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no")
	logFile, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serverLog := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	client := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), MaxRetries: -1})
	defer client.Close()
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 0; ; attempt++ {
		select {
		case <-exited:
			t.Fatalf("redis-server rejected the configuration: %v\n%s", waitErr, serverLog())
		default:
		}
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := client.Ping(pctx).Err()
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || attempt > 200 {
			t.Fatalf("redis-server not answering: %v\n%s", err, serverLog())
		}
		time.Sleep(50 * time.Millisecond) // polling a process we cannot get a signal from
	}
	for param, ok := range map[string]func(string) bool{
		"appendonly":       func(v string) bool { return v == "yes" },
		"appendfsync":      func(v string) bool { return v == "everysec" || v == "always" },
		"maxmemory-policy": func(v string) bool { return v == "noeviction" },
	} {
		got, err := client.ConfigGet(ctx, param).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !ok(got[param]) {
			t.Errorf("%s = %q", param, got[param])
		}
	}
}

// ---------------------------------------------------------------------------
// Metrics and alerts

// recorder is a registry that remembers the metric names registered.
type recorder struct {
	*prometheus.Registry
	names map[string]bool
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	r := &recorder{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	auth.NewMetrics(r)
	proxy.NewMetrics(r)
	ratelimit.NewMetrics(r)
	onboard.RegisterWebhookMetrics(r, nil)
	r.MustRegister(&control.TenantsGauge{})
	// Registered by cmd/lsproxy (package main); test/e2e checks it on /metrics.
	r.names["lsproxy_build_info"] = true
	if len(r.names) == 0 {
		t.Fatal("no lsproxy metrics registered")
	}
	return r.names
}

var metricRE = regexp.MustCompile(`lsproxy_[a-z_]+[a-z]`)

// TestMetricsDocumented: docs/operations.md names every metric lsproxy
// registers, and the docs and the chart's alert rules name no other.
func TestMetricsDocumented(t *testing.T) {
	names := metricNames(t)
	registered := func(n string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && names[base] {
				return true
			}
		}
		return false
	}
	docs, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(chartDir + "/templates/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string]string{"docs/operations.md": string(docs), "prometheusrule.yaml": string(rules)} {
		for _, n := range metricRE.FindAllString(text, -1) {
			if !registered(n) {
				t.Errorf("%s names %s, which lsproxy does not export", where, n)
			}
		}
	}
	for n := range names {
		if !strings.Contains(string(docs), "`"+n) {
			t.Errorf("docs/operations.md does not document %s", n)
		}
	}
}

// TestAlertsMatchDocs: the chart's PrometheusRule and the rules shown in
// docs/operations.md are the same alerts with the same expressions (the
// chart only adds a job/namespace selector).
func TestAlertsMatchDocs(t *testing.T) {
	m := modes[slices.IndexFunc(modes, func(m mode) bool { return m.name == "standalone" })]
	rule := render(t, m).find("PrometheusRule", "")
	if rule == nil {
		t.Fatal("no PrometheusRule rendered with prometheusRule.enabled")
	}
	selector := regexp.MustCompile(`job="[^"]*", namespace="[^"]*"(, )?`)
	chart := map[string]string{}
	for _, r := range list(dig(rule, "spec", "groups", 0, "rules")) {
		expr := selector.ReplaceAllString(str(dig(r, "expr")), "")
		chart[str(dig(r, "alert"))] = strings.ReplaceAll(expr, "{}", "")
	}

	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```yaml\n(groups:.*?)```").FindSubmatch(b)
	if block == nil {
		t.Fatal("docs/operations.md has no ```yaml block starting with groups: (the alert rules)")
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(block[1], &doc); err != nil {
		t.Fatalf("alert rules in docs/operations.md: %v", err)
	}
	docs := map[string]string{}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			docs[r.Alert] = r.Expr
		}
	}
	if len(docs) == 0 || !maps.Equal(chart, docs) {
		t.Errorf("alerts differ:\nchart %q\ndocs  %q", chart, docs)
	}
}

// ---------------------------------------------------------------------------
// Dockerfile

type instruction struct {
	cmd  string // upper case
	args string
	line int
}

type stage struct {
	from  string // image
	name  string
	instr []instruction
}

// parseDockerfile returns the global instructions (before the first FROM)
// and the stages. Continuation lines are joined, comments dropped.
func parseDockerfile() ([]instruction, []stage, error) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		return nil, nil, err
	}
	var global []instruction
	var stages []stage
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		full := strings.TrimSpace(cur.String())
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:]
			}
			if len(f) == 0 {
				return nil, nil, fmt.Errorf("Dockerfile line %d: FROM without an image", in.line)
			}
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			global = append(global, in)
		} else {
			stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, in)
		}
	}
	if len(stages) == 0 {
		return nil, nil, errors.New("Dockerfile has no FROM")
	}
	return global, stages, nil
}

func mustParseDockerfile(t *testing.T) ([]instruction, []stage) {
	t.Helper()
	g, s, err := parseDockerfile()
	if err != nil {
		t.Fatal(err)
	}
	return g, s
}

var varNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)

// shellWords splits a simple shell command into words, removing quotes and
// expanding $VAR and ${VAR} outside single quotes. Anything beyond a single
// simple command (;, &&, |, redirections, substitutions, ${VAR:-x}) is an
// error: the build line must stay one plain go build that this test can run.
func shellWords(s string, lookup func(string) string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	// expand writes the expansion at s[i] == '$' and returns the index of
	// its last byte.
	expand := func(i int) (int, error) {
		if strings.HasPrefix(s[i:], "${") {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return 0, errors.New("unterminated ${")
			}
			name := s[i+2 : i+end]
			if varNameRE.FindString(name) != name {
				return 0, fmt.Errorf("unsupported expansion ${%s}", name)
			}
			w.WriteString(lookup(name))
			return i + end, nil
		}
		name := varNameRE.FindString(s[i+1:])
		if name == "" {
			return 0, errors.New("unsupported use of $")
		}
		w.WriteString(lookup(name))
		return i + len(name), nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		var err error
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
			continue
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated '")
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case c == '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
					i++
					w.WriteByte(s[i])
				case s[i] == '$':
					if i, err = expand(i); err != nil {
						return nil, err
					}
				case s[i] == '`':
					return nil, errors.New("command substitution")
				default:
					w.WriteByte(s[i])
				}
			}
			if i >= len(s) {
				return nil, errors.New(`unterminated "`)
			}
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
		case c == '$':
			if i, err = expand(i); err != nil {
				return nil, err
			}
		case strings.IndexByte(";&|<>`()", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q", c)
		default:
			w.WriteByte(c)
		}
		inWord = true
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

func TestShellWords(t *testing.T) {
	vars := map[string]string{"V": "v1.2", "E": ""}
	lookup := func(k string) string { return vars[k] }
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: `go build -ldflags "-s -X main.version=${V}" ./cmd`, want: []string{"go", "build", "-ldflags", "-s -X main.version=v1.2", "./cmd"}},
		{in: `a '$V' $V x$E"y" $V/b`, want: []string{"a", "$V", "v1.2", "xy", "v1.2/b"}},
		{in: `a \"b c\\d "e\"f"`, want: []string{"a", `"b`, `c\d`, `e"f`}},
		{in: `''`, want: []string{""}},
		{in: `go build && rm -rf /`, bad: true},
		{in: `go build "$(id)"`, bad: true},
		{in: "go build `id`", bad: true},
		{in: `go build "unterminated`, bad: true},
		{in: `go build 'unterminated`, bad: true},
		{in: `go build ${V:-x}`, bad: true},
		{in: `go build ${V`, bad: true},
		{in: `go build $ x`, bad: true},
	} {
		got, err := shellWords(tc.in, lookup)
		if tc.bad {
			if err == nil {
				t.Errorf("shellWords(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// stageVars evaluates a stage's ARG and ENV instructions before index upTo:
// ARGs take buildArgs (as docker build --build-arg would) or their default;
// ENV values are expanded. It returns the variables a RUN at upTo sees, and
// the ENV variables alone.
func stageVars(s stage, upTo int, buildArgs map[string]string) (vars, envs map[string]string, err error) {
	vars, envs = map[string]string{}, map[string]string{}
	lookup := func(k string) string { return vars[k] }
	for _, in := range s.instr[:upTo] {
		switch in.cmd {
		case "ARG":
			for _, a := range strings.Fields(in.args) {
				name, def, _ := strings.Cut(a, "=")
				if v, ok := buildArgs[name]; ok {
					def = v
				}
				vars[name] = def
			}
		case "ENV":
			words, err := shellWords(in.args, lookup)
			if err != nil {
				return nil, nil, fmt.Errorf("Dockerfile line %d: ENV: %w", in.line, err)
			}
			for _, w := range words {
				k, v, ok := strings.Cut(w, "=")
				if !ok {
					return nil, nil, fmt.Errorf("Dockerfile line %d: ENV %q: use KEY=value", in.line, w)
				}
				vars[k], envs[k] = v, v
			}
		}
	}
	return vars, envs, nil
}

func instructions(s stage, cmd string) []instruction {
	var out []instruction
	for _, in := range s.instr {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// TestDockerfileStatic checks the Dockerfile without Docker: a multi-stage
// build from the Go version in go.mod, a static (CGO_ENABLED=0) binary, a
// distroless non-root runtime with both ports, listeners bound for a
// container, exec-form ENTRYPOINT and HEALTHCHECK, no ADD, pinned tags.
func TestDockerfileStatic(t *testing.T) {
	global, stages := mustParseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
	}
	for _, s := range stages {
		if s.from != "scratch" && (strings.HasSuffix(s.from, ":latest") || !strings.Contains(s.from, ":")) {
			t.Errorf("FROM %s: pin a tag", s.from)
		}
		for _, in := range s.instr {
			if in.cmd == "ADD" {
				t.Errorf("Dockerfile line %d: ADD; use COPY", in.line)
			}
		}
	}

	// The builder's Go is go.mod's.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	var argGo string
	for _, in := range global {
		if name, def, _ := strings.Cut(in.args, "="); in.cmd == "ARG" && name == "GO_VERSION" {
			argGo = def
		}
	}
	if goVersion == nil || argGo != string(goVersion[1]) {
		t.Errorf("ARG GO_VERSION=%s, want go.mod's go version %s", argGo, goVersion[1])
	}

	build := stages[0]
	if !strings.HasPrefix(build.from, "golang:") || build.name == "" {
		t.Errorf("build stage FROM %s AS %q, want a named golang: stage", build.from, build.name)
	}
	_, envs, err := stageVars(build, len(build.instr), nil)
	if err != nil {
		t.Fatal(err)
	}
	if envs["CGO_ENABLED"] != "0" {
		t.Errorf("build stage CGO_ENABLED = %q, want 0 (a static binary)", envs["CGO_ENABLED"])
	}
	copies := instructions(build, "COPY")
	if len(copies) < 2 || copies[0].args != "go.mod go.sum ./" {
		t.Error("copy go.mod and go.sum (then go mod download) before the sources, for layer caching")
	}

	final := stages[len(stages)-1]
	switch {
	case strings.HasPrefix(final.from, "gcr.io/distroless/static") && strings.HasSuffix(final.from, ":nonroot"):
	case final.from == "scratch":
		if !strings.Contains(fmt.Sprint(instructions(final, "COPY")), "ca-certificates") {
			t.Error("scratch runtime without CA certificates")
		}
	default:
		t.Errorf("runtime FROM %s, want distroless static :nonroot, or scratch", final.from)
	}
	users := instructions(final, "USER")
	if len(users) == 0 {
		t.Fatal("runtime stage has no USER")
	}
	uid, _, _ := strings.Cut(users[len(users)-1].args, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s: want a numeric non-root uid (runAsNonRoot can verify it)", users[len(users)-1].args)
	}
	_, runtimeEnv, err := stageVars(final, len(final.instr), nil)
	if err != nil {
		t.Fatal(err)
	}
	var exposed []string
	for _, in := range instructions(final, "EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	for _, v := range []string{"LSPROXY_LISTEN", "LSPROXY_CONTROL_LISTEN"} {
		host, port, err := net.SplitHostPort(runtimeEnv[v])
		if err != nil || host != "0.0.0.0" {
			t.Errorf("%s = %q, want 0.0.0.0:<port> (reachable from outside the container)", v, runtimeEnv[v])
		}
		if !slices.Contains(exposed, port) {
			t.Errorf("%s port %q is not EXPOSEd (%v)", v, port, exposed)
		}
	}
	if n := len(instructions(final, "HEALTHCHECK")); n != 1 {
		t.Errorf("want one HEALTHCHECK, got %d", n)
	}
	for _, name := range []string{"ENTRYPOINT", "CMD"} {
		for _, in := range instructions(final, name) {
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil {
				t.Errorf("Dockerfile line %d: %s must be exec form [\"...\"]: no shell in the image", in.line, name)
			}
		}
	}
}

// image is what the Dockerfile builds, as far as it can be run without Docker.
type image struct {
	binary     string            // the binary, built by the Dockerfile's go build line
	path       string            // its path in the runtime image
	env        map[string]string // the runtime stage's ENV
	entrypoint []string
	health     []string      // the HEALTHCHECK command
	healthWait time.Duration // its --timeout
}

// buildImage runs the Dockerfile's go build line as written: its flags and
// ldflags, the stage's ARG and ENV as environment, VERSION as a build
// argument and this machine as the target platform; only -o goes to a
// temporary directory. It also reads what the runtime stage does with the
// binary.
func buildImage(t *testing.T, version string) image {
	t.Helper()
	_, stages := mustParseDockerfile(t)
	var (
		buildStage stage
		words      []string
		vars       map[string]string
		found      int
	)
	for _, s := range stages {
		for i, in := range s.instr {
			if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
				continue
			}
			found++
			buildStage = s
			var err error
			vars, _, err = stageVars(s, i, map[string]string{
				"VERSION": version, "REVISION": stampedRevision, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH,
			})
			if err != nil {
				t.Fatal(err)
			}
			args := in.args
			for strings.HasPrefix(args, "--") { // RUN flags: --mount=...
				_, args, _ = strings.Cut(args, " ")
				args = strings.TrimSpace(args)
			}
			if words, err = shellWords(args, func(k string) string { return vars[k] }); err != nil {
				t.Fatalf("Dockerfile line %d: the build line must be one simple command: %v", in.line, err)
			}
		}
	}
	if found != 1 {
		t.Fatalf("want exactly one RUN ... go build line, found %d", found)
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("the build line runs %q, want go build", words)
	}
	out := slices.Index(words, "-o")
	if out < 0 || out+1 >= len(words) {
		t.Fatal("the go build line has no -o OUTPUT")
	}
	built := words[out+1]
	img := image{binary: filepath.Join(t.TempDir(), "lsproxy")}
	words[out+1] = img.binary

	final := stages[len(stages)-1]
	for _, in := range instructions(final, "COPY") {
		f := strings.Fields(in.args)
		if len(f) == 3 && f[0] == "--from="+buildStage.name && f[1] == built {
			img.path = f[2]
		}
	}
	if img.path == "" {
		t.Fatalf("the runtime stage does not COPY --from=%s %s", buildStage.name, built)
	}
	var err error
	if _, img.env, err = stageVars(final, len(final.instr), nil); err != nil {
		t.Fatal(err)
	}
	for _, in := range instructions(final, "ENTRYPOINT") {
		if err := json.Unmarshal([]byte(in.args), &img.entrypoint); err != nil {
			t.Fatalf("ENTRYPOINT %s: %v", in.args, err)
		}
	}
	for _, in := range instructions(final, "HEALTHCHECK") {
		opts, cmd, ok := strings.Cut(in.args, "CMD ")
		if !ok {
			t.Fatalf("Dockerfile line %d: HEALTHCHECK without CMD", in.line)
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(cmd)), &img.health); err != nil {
			t.Fatalf("Dockerfile line %d: HEALTHCHECK CMD must be exec form (no shell in the image): %v", in.line, err)
		}
		img.healthWait = 30 * time.Second // Docker's default
		for _, o := range strings.Fields(opts) {
			if v, ok := strings.CutPrefix(o, "--timeout="); ok {
				if img.healthWait, err = time.ParseDuration(v); err != nil {
					t.Fatalf("HEALTHCHECK %s: %v", o, err)
				}
			}
		}
	}

	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	env := os.Environ()
	for k, v := range vars { // ARGs and ENV are the RUN's environment
		env = append(env, k+"="+v)
	}
	stdout, stderr, err := run(t, "..", env, goTool, words[1:]...) // WORKDIR /src: the module (COPY . .)
	if err != nil {
		t.Fatalf("the Dockerfile's build line failed: %v\n%s%s", err, stdout, stderr)
	}
	return img
}

// imageEnv is the runtime image's environment (nothing from this machine)
// with "KEY=value" overrides.
func imageEnv(img image, overrides ...string) []string {
	env := maps.Clone(img.env)
	for _, kv := range overrides {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

const (
	stampedVersion  = "v0.0.0-deploytest+abc123"
	stampedRevision = "0123456789abcdef0123456789abcdef01234567"
)

// TestDockerfileBuild builds the binary exactly as the image does, then
// runs it as the image would: the stamped version, static linking, the
// HEALTHCHECK against a real listener, and the secure default of the
// image's listeners.
func TestDockerfileBuild(t *testing.T) {
	img := buildImage(t, stampedVersion)

	t.Run("version", func(t *testing.T) {
		out, stderr, err := run(t, ".", imageEnv(img), img.binary, "version")
		want := "lsproxy " + stampedVersion + " (revision " + stampedRevision[:12] + ", " + runtime.Version() + ", "
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), want) {
			t.Fatalf("lsproxy version = %q (%v %s), want %q...", out, err, stderr, want)
		}
		if len(img.entrypoint) == 0 || img.entrypoint[0] != img.path {
			t.Errorf("ENTRYPOINT %q does not run the built binary %s", img.entrypoint, img.path)
		}
	})

	t.Run("static", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("ELF check on linux only")
		}
		f, err := elf.Open(img.binary)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary has an ELF interpreter: it is dynamically linked and will not run on distroless static")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("the binary needs shared libraries %v", libs)
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		if len(img.health) < 2 || img.health[0] != img.path {
			t.Fatalf("HEALTHCHECK %q does not run %s", img.health, img.path)
		}
		_, port, err := net.SplitHostPort(img.env["LSPROXY_CONTROL_LISTEN"])
		if err != nil {
			t.Fatalf("image LSPROXY_CONTROL_LISTEN %q: %v", img.env["LSPROXY_CONTROL_LISTEN"], err)
		}
		status := http.StatusOK
		var mu sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
		}))
		defer srv.Close()
		_, testPort, _ := net.SplitHostPort(srv.Listener.Addr().String())
		// The image's listener address with this server's port (the image's
		// own port may be taken here): the host part, 0.0.0.0, is what the
		// healthcheck must turn into a dialable address.
		listen := strings.TrimSuffix(img.env["LSPROXY_CONTROL_LISTEN"], port) + testPort
		check := func() (int, time.Duration) {
			env := imageEnv(img, "LSPROXY_CONTROL_LISTEN="+listen)
			started := time.Now()
			_, _, err := run(t, ".", env, img.binary, img.health[1:]...)
			var exit *exec.ExitError
			switch {
			case err == nil:
				return 0, time.Since(started)
			case errors.As(err, &exit):
				return exit.ExitCode(), time.Since(started)
			}
			t.Fatalf("healthcheck did not run: %v", err)
			return -1, 0
		}
		if code, _ := check(); code != 0 {
			t.Errorf("healthy: exit %d, want 0", code)
		}
		mu.Lock()
		status = http.StatusServiceUnavailable
		mu.Unlock()
		if code, _ := check(); code != 1 {
			t.Errorf("/healthz 503: exit %d, want 1", code)
		}
		srv.Close()
		code, took := check()
		if code != 1 {
			t.Errorf("nothing listening: exit %d, want 1", code)
		}
		if took >= img.healthWait {
			t.Errorf("healthcheck took %s, beyond the HEALTHCHECK --timeout %s", took, img.healthWait)
		}
	})

	// The image binds 0.0.0.0: without caller keys lsproxy must refuse to
	// serve, and say how to fix it.
	t.Run("secure-default", func(t *testing.T) {
		creds := []string{"LSPROXY_CLIENT_ID=id", "LSPROXY_CLIENT_SECRET=secret",
			"LSPROXY_ENCRYPTION_KEY=" + fakeExternalSecret["encryption-key"]}
		_, stderr, err := run(t, ".", imageEnv(img, creds...), img.binary, "check-config")
		if err == nil || !strings.Contains(stderr, "LSPROXY_CLIENT_KEYS") {
			t.Fatalf("check-config with the image's listeners and no caller keys: %v %q; want a refusal naming LSPROXY_CLIENT_KEYS", err, stderr)
		}
		keys := "LSPROXY_CLIENT_KEYS=app:" + strings.Repeat("ab", 32) + ":*"
		out, stderr, err := run(t, ".", imageEnv(img, append(creds, keys)...), img.binary, "check-config")
		if err != nil || !strings.Contains(out, "configuration OK") {
			t.Fatalf("check-config with caller keys: %v %s%s", err, out, stderr)
		}
	})
}

// ---------------------------------------------------------------------------
// .dockerignore

// dockerignore is a parsed .dockerignore with Docker's matching rules:
// patterns are relative to the context root, ** spans directories, a path
// is excluded when it or a parent directory matches, ! re-includes, and the
// last matching pattern wins.
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func parseDockerignore(t *testing.T) dockerignore {
	t.Helper()
	b, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		negate := strings.HasPrefix(line, "!")
		p := path.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/"))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		d = append(d, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile(re.String()), negate})
	}
	return d
}

func (d dockerignore) excludes(file string) bool {
	excluded := false
	for _, p := range d {
		matched := false
		for q := file; q != "." && q != "/" && !matched; q = path.Dir(q) {
			matched = p.re.MatchString(q)
		}
		if matched {
			excluded = !p.negate
		}
	}
	return excluded
}

// TestDockerignore: everything `go build ./cmd/lsproxy` needs for the image's
// platform (go.mod, go.sum, every Go and embedded file of the module's
// packages in the build) is in the context; VCS data, local data and
// secrets are not.
func TestDockerignore(t *testing.T) {
	d := parseDockerignore(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	env := append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	out, stderr, err := run(t, "..", env, goTool, "list", "-deps", "-json=Dir,Module,GoFiles,CgoFiles,SFiles,EmbedFiles,IgnoredGoFiles", "./cmd/lsproxy")
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var pkg struct {
			Dir                                   string
			Module                                *struct{ Main bool }
			GoFiles, CgoFiles, SFiles, EmbedFiles []string
		}
		if err := dec.Decode(&pkg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if pkg.Module == nil || !pkg.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, pkg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range slices.Concat(pkg.GoFiles, pkg.CgoFiles, pkg.SFiles, pkg.EmbedFiles) {
			needed = append(needed, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, f := range needed {
		if d.excludes(f) {
			t.Errorf(".dockerignore excludes %s, which the build needs", f)
		}
	}
	for _, f := range []string{".git/config", "data/lsproxy.db", "lsproxy", ".env", "store/lsproxy.db",
		"config/config_test.go", "helm/lsproxy/values.yaml", "deploy/sidecar.yaml", "certs/server.key"} {
		if !d.excludes(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

// TestAlertRulesPromtool runs the Prometheus rule tests in
// testdata/alerts*.test.yaml (promtool's format) against the alert rules
// of docs/operations.md (the chart's, without the job/namespace selector:
// TestAlertsMatchDocs keeps them equal). Skipped when promtool is not on
// the PATH (go install github.com/prometheus/prometheus/cmd/promtool@latest).
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on the PATH")
	}
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```yaml\n(groups:.*?)```").FindSubmatch(b)
	if block == nil {
		t.Fatal("docs/operations.md has no ```yaml block starting with groups:")
	}
	tests, err := filepath.Glob("testdata/alerts*.test.yaml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("no rule tests: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), block[1], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range tests {
		raw, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, filepath.Base(src))
		if err := os.WriteFile(dst, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "test", "rules", dst).CombinedOutput()
		if err != nil {
			t.Errorf("promtool test rules %s: %v\n%s", src, err, out)
		}
	}
}
