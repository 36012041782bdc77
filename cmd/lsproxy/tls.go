package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/config"
)

// certCheckInterval is how often, at most, the certificate files are
// checked for changes (on a TLS handshake).
const certCheckInterval = 3 * time.Second

// newProxyServer returns the http.Server of the proxied-traffic listener,
// exactly as serve runs it: bounded header read time and size, idle
// connections closed, no WriteTimeout (proxied responses may stream).
//
// A request body must arrive within cfg.BodyReadTimeout (bodyDeadline).
func newProxyServer(cfg config.Config, h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler: bodyDeadline(h, cfg.BodyReadTimeout),
		// Slow or idle clients cannot hold connections forever.
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
	}
}

// newControlServer returns the http.Server of the control listener: as the
// proxy's, plus read and write timeouts (admin bodies are small and nothing
// streams there).
//
// On TLS every answer carries Strict-Transport-Security: a browser that
// once reached the console over HTTPS never falls back to plain HTTP.
func newControlServer(cfg config.Config, h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           hsts(h),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
	}
}

// hstsValue: one year, the usual minimum for HSTS to protect anything.
const hstsValue = "max-age=31536000"

// hsts sets Strict-Transport-Security on answers to TLS requests.
func hsts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", hstsValue)
		}
		h.ServeHTTP(w, r)
	})
}

// bodyDeadline gives a request with a body a read deadline d from now
// (http.ResponseController), so a client trickling its body cannot hold
// the upstream connection it was given. Once the body has been read to
// its end the deadline is lifted: the server's background read of the
// connection must not end a long response that follows.
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			h.ServeHTTP(w, r) // not supported by this connection: as before
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline at the body's end.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// listener is a bound listener and how to serve srv on it: TLS when a
// certificate is configured, plain HTTP otherwise.
type listener struct {
	net.Listener
	tls bool
	// reloader serves the certificate when tls; nil otherwise.
	reloader *certReloader
}

// listen binds addr. With certFile and keyFile set it loads them (an error
// now, before anything listens) and configures srv for TLS with a
// certificate that follows changes to the files.
func listen(addr, certFile, keyFile string, srv *http.Server, lg *zap.Logger) (*listener, error) {
	var r *certReloader
	if certFile != "" || keyFile != "" {
		var err error
		if r, err = newCertReloader(certFile, keyFile, lg); err != nil {
			return nil, err
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: l, tls: r != nil, reloader: r}, nil
}

// serve runs srv on l until srv is shut down.
func (l *listener) serve(srv *http.Server) error {
	if l.tls {
		return srv.ServeTLS(l.Listener, "", "") // the certificate comes from TLSConfig.GetCertificate
	}
	return srv.Serve(l.Listener)
}

// certReloader hands out the certificate in a PEM certificate/key file pair
// and re-reads the pair when either file's modification time or size
// changes, checking at most once per interval. A pair that fails to load
// (e.g. the certificate was replaced but not yet its key) is logged and the
// previous certificate kept; the next check tries again.
//
// GetCertificate is safe for concurrent use.
type certReloader struct {
	certFile, keyFile string
	// interval between checks of the files; tests shorten it.
	interval time.Duration
	// now is the clock seam for the check interval.
	now func() time.Time
	log *zap.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   fileStamp // of the files that cert was loaded from
	checked time.Time
}

// fileStamp identifies a version of the certificate and key files.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// newCertReloader loads the pair once; it returns an error naming the files
// (never their content) when they cannot be loaded.
func newCertReloader(certFile, keyFile string, lg *zap.Logger) (*certReloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("TLS needs both a certificate file and a key file")
	}
	r := &certReloader{certFile: certFile, keyFile: keyFile, interval: certCheckInterval, now: time.Now, log: lg}
	st, err := r.statFiles()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.stamp, r.checked = cert, st, r.now()
	return r, nil
}

func (r *certReloader) statFiles() (fileStamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("TLS certificate: %w", err)
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("TLS key: %w", err)
	}
	return fileStamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

func (r *certReloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return &cert, nil
}

// GetCertificate is a tls.Config.GetCertificate hook.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.interval {
		r.checked = now
		r.reloadIfChanged()
	}
	return r.cert, nil
}

// reloadIfChanged runs with r.mu held. The files are stat'ed before they
// are read, so a change during the read is seen by the next check.
func (r *certReloader) reloadIfChanged() {
	st, err := r.statFiles()
	if err != nil {
		r.log.Warn("TLS certificate files unreadable; keeping the current certificate", zap.Error(err))
		return
	}
	if st == r.stamp {
		return
	}
	cert, err := r.load()
	if err != nil {
		r.log.Warn("TLS certificate files changed but do not load; keeping the current certificate", zap.Error(err))
		return
	}
	r.cert, r.stamp = cert, st
	fields := []zap.Field{zap.String("cert_file", r.certFile)}
	if cert.Leaf != nil {
		fields = append(fields, zap.Time("not_after", cert.Leaf.NotAfter), zap.String("serial", cert.Leaf.SerialNumber.String()))
	}
	r.log.Info("TLS certificate reloaded", fields...)
}

// healthcheckTLS is the transport of `lsproxy healthcheck` against a TLS
// control listener on loopback. The configured certificate is usually issued
// for a public name, not 127.0.0.1, so the probe does not verify it: it
// sends no credential and reads only a status code, exactly like the plain
// HTTP probe. Nothing else in lsproxy skips verification.
func healthcheckTLS() *http.Transport {
	return &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // loopback liveness probe, no secrets sent
	}
}
