package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/store"
)

// tenantsExport is `lsproxy tenants export [--config FILE] [--force] OUT`:
// it reads every tenant straight from the store with the operator's
// encryption key (never through the admin API, which never shows a token)
// and writes one import line per tenant to OUT, created with mode 0600.
// OUT "-" is standard output, refused when that is a terminal: tokens do
// not belong on a screen or in a scrollback. Access tokens are written
// with their remaining lifetime; expired ones are left out.
func tenantsExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("lsproxy tenants export", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file (store and encryption keys)")
	force := fs.Bool("force", false, "replace OUT if it exists")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: lsproxy tenants export [--config FILE] [--force] OUT\n\n"+
			"Writes every tenant, tokens included, as NDJSON to OUT (mode 0600; \"-\" = standard output, never a terminal).\n"+
			"Stop lsproxy's refreshing first when you migrate out: a token refreshed after the export is spent in the file.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(longFlags(fs, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "lsproxy tenants export:", err)
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	out := fs.Arg(0)
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants export: configuration:", err)
		return 1
	}
	if problems := cfg.Validate(config.ModeDev); len(problems) > 0 || cfg.EncryptionKey == "" {
		fmt.Fprintln(stderr, "lsproxy tenants export: configuration problems (the store and LSPROXY_ENCRYPTION_KEY are needed):")
		for _, p := range problems {
			fmt.Fprintln(stderr, "  -", p)
		}
		return 1
	}

	var w io.Writer
	if out == "-" {
		if isTerminal(stdout) {
			fmt.Fprintln(stderr, "lsproxy tenants export: refusing to write tokens to a terminal; give a file name or redirect standard output")
			return 2
		}
		w = stdout
	} else {
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if *force {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		f, err := os.OpenFile(out, flags, 0o600)
		if err != nil {
			fmt.Fprintln(stderr, "lsproxy tenants export:", err)
			return 1
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintln(stderr, "lsproxy tenants export: refusing to write tokens to a terminal device")
			return 2
		}
		if err := f.Chmod(0o600); err != nil { // an existing file replaced with --force
			fmt.Fprintln(stderr, "lsproxy tenants export:", err)
			return 1
		}
		w = f
	}

	keys, err := store.ParseKeys(append([]string{cfg.EncryptionKey}, cfg.EncryptionKeys...)...)
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants export:", err)
		return 1
	}
	s, kind, err := openStore(ctx, cfg, keys, nil)
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(stderr, "lsproxy tenants export: %v\nThe embedded store serves one process: stop lsproxy serve first.\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants export: opening the store:", err)
		return 1
	}
	defer s.Close()
	n, failed, err := exportTenants(ctx, s, w, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants export:", err)
		return 1
	}
	fmt.Fprintf(stderr, "export: %s store: %d tenants written, %d failed\n", kind, n, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

// exportTenants writes every tenant of s as an import line. A record that
// cannot be read is reported on w's side channel (counted in failed), never
// half-written.
func exportTenants(ctx context.Context, s store.Store, w io.Writer, now time.Time) (n, failed int, err error) {
	ids, err := s.List(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("listing tenants: %w", err)
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, id := range ids {
		t, err := s.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			failed++
			continue
		}
		if t.RefreshToken == "" {
			continue // a placeholder awaiting its first authorization: nothing to move
		}
		if err := enc.Encode(exportLine(t, now)); err != nil {
			return n, failed, fmt.Errorf("writing: %w", err)
		}
		n++
	}
	if err := bw.Flush(); err != nil {
		return n, failed, fmt.Errorf("writing: %w", err)
	}
	return n, failed, nil
}

func exportLine(t *store.Tenant, now time.Time) control.ImportLine {
	l := control.ImportLine{
		ID: t.ID, RefreshToken: t.RefreshToken, Scope: t.Scope, DomainPrefix: t.Extra["domain_prefix"],
		Status: t.Status, Reason: t.Reason, Account: t.Account, Locations: t.Locations,
	}
	if left := t.AccessExpiresAt.Sub(now); t.AccessToken != "" && left >= time.Second {
		l.AccessToken, l.ExpiresIn = t.AccessToken, int64(left/time.Second)
	}
	if left := t.RefreshExpiresAt.Sub(now); !t.RefreshExpiresAt.IsZero() && left >= time.Second {
		l.RefreshExpiresIn = int64(left / time.Second)
	}
	if l.Status == store.StatusActive {
		l.Status = "" // the import default
	}
	return l
}
