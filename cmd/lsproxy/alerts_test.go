package main

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/config"
)

// recordingRegisterer registers with a real registry and keeps the name of
// every metric registered, also those with no series yet.
type recordingRegisterer struct {
	*prometheus.Registry
	names map[string]bool
}

var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registry.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var (
	// selectorRE is a metric name with its optional label matchers.
	selectorRE = regexp.MustCompile(`\b(lsproxy_[a-z_]+)(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-z_]+)\s*(=~|!=|=)\s*"([^"]*)"`)
)

// TestAlertRulesNameEmittedMetrics: every metric an alert rule names (the
// chart's PrometheusRule and docs/operations.md) is registered by serve's
// wiring, and every label value a rule matches exists: outcome, state and
// status values are series from the start (a rate() sees the first event),
// error values are codes of the error table.
func TestAlertRulesNameEmittedMetrics(t *testing.T) {
	cfg := config.Default()
	cfg.Listen, cfg.ControlListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ClientID, cfg.ClientSecret = "cid", "csecret"
	cfg.EncryptionKey = randomKey(t)
	cfg.DataDir = t.TempDir()
	cfg.RedirectURL = "http://127.0.0.1:8081/oauth/callback"
	cfg.AdminToken = strings.Repeat("a", 32)
	rec := &recordingRegisterer{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	a, err := build(context.Background(), cfg, zap.NewNop(), rec)
	if err != nil {
		t.Fatal(err)
	}
	defer a.store.Close()
	mfs, err := rec.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string][]string{} // metric → label → values
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if series[mf.GetName()] == nil {
					series[mf.GetName()] = map[string][]string{}
				}
				series[mf.GetName()][l.GetName()] = append(series[mf.GetName()][l.GetName()], l.GetValue())
			}
		}
	}
	table, err := os.ReadFile("../../internal/httperr/httperr.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, file := range []string{"../../helm/lsproxy/templates/prometheusrule.yaml", "../../docs/operations.md"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(raw), "{{- $sel -}},", "")
		text = strings.ReplaceAll(text, "{{- $sel -}}", "")
		for _, line := range strings.Split(text, "\n") {
			if !strings.Contains(line, "expr:") && !strings.HasPrefix(strings.TrimSpace(line), "sum(") &&
				!strings.HasPrefix(strings.TrimSpace(line), "/ sum(") && !strings.HasPrefix(strings.TrimSpace(line), "(sum(") &&
				!strings.HasPrefix(strings.TrimSpace(line), "or sum(") && !strings.HasPrefix(strings.TrimSpace(line), "histogram_quantile(") {
				continue
			}
			for _, m := range selectorRE.FindAllStringSubmatch(line, -1) {
				name := m[1]
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				checked++
				if !rec.names[name] && !rec.names[base] {
					t.Errorf("%s: an alert names %s, which serve does not register", file, name)
					continue
				}
				for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
					label, op, value := lm[1], lm[2], lm[3]
					switch label {
					case "job", "namespace", "instance", "le":
						continue
					case "error":
						for _, v := range strings.Split(value, "|") {
							if !strings.Contains(string(table), `Code: "`+v+`"`) {
								t.Errorf("%s: %s{error=%q} is no code of the error table", file, name, v)
							}
						}
						continue
					}
					have := series[name][label]
					for _, v := range strings.Split(value, "|") {
						if op == "!=" && len(have) == 0 || op != "!=" && !slices.Contains(have, v) {
							t.Errorf("%s: %s{%s%s%q}: no series with %s=%q from the start (have %v)", file, name, label, op, value, label, v, have)
						}
					}
				}
			}
		}
	}
	if checked < 12 {
		t.Fatalf("only %d metric references found in the alert rules: the scan is broken", checked)
	}
}
