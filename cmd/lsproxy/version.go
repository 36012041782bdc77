package main

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"runtime/debug"
	"strings"
	"sync"
)

// Stamped at build time; the Dockerfile sets both:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.revision=$(git rev-parse HEAD)"
//
// Unstamped builds fall back to what the Go toolchain recorded
// (debug.ReadBuildInfo: the module version of `go install ...@v1.2.3`, the
// VCS revision of a build inside a git checkout).
var (
	version  = "dev"
	revision = ""
)

// buildInfo describes this binary, for `version`, the startup log and
// lsproxy_build_info.
type buildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"goversion"`
	Platform  string `json:"platform"`
	Modified  bool   `json:"modified,omitempty"`
}

// String is "v1.2.3 (revision 0123abcd, go1.26.8, linux/amd64)".
func (b buildInfo) String() string {
	rev := b.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if b.Modified {
		rev += "-dirty"
	}
	return b.Version + " (revision " + rev + ", " + b.GoVersion + ", " + b.Platform + ")"
}

var currentBuild = sync.OnceValue(func() buildInfo {
	b := buildInfo{Version: version, Revision: revision, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Revision == "" {
					b.Revision = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true" && revision == ""
			}
		}
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	b.Revision = strings.TrimSpace(b.Revision)
	return b
})

// buildInfoGauge is lsproxy_build_info{version,revision,goversion} = 1.
func buildInfoGauge() prometheus.Collector {
	b := currentBuild()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "lsproxy_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
