package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig says how to reach Redis. Set exactly one of URL,
// SentinelMaster (with SentinelAddrs) or ClusterAddrs.
type RedisConfig struct {
	// URL is redis://[user:password@]host:port[/db] or rediss:// for TLS
	// (go-redis ParseURL, including its query options).
	URL string
	// SentinelMaster and SentinelAddrs select a Sentinel-managed master.
	SentinelMaster string
	SentinelAddrs  []string
	// ClusterAddrs are seed nodes of a Redis Cluster.
	ClusterAddrs []string
	// Password, when set, overrides the URL's password (and is the master
	// and node password for Sentinel and Cluster).
	Password string
	// CAFile is a PEM bundle of CAs that sign the server certificates. It
	// requires TLS: a rediss:// URL, or TLS for Sentinel and Cluster.
	CAFile string
	// TLS enables TLS for Sentinel and Cluster addresses (implied by
	// CAFile). A URL chooses TLS by its scheme.
	TLS bool
	// DialTimeout bounds connecting; zero: 5s.
	DialTimeout time.Duration
}

// DialRedis connects as cfg says and pings once. Errors say where Redis
// was expected ("store: redis at HOST unreachable: ...") and never contain
// the password.
func DialRedis(ctx context.Context, cfg RedisConfig) (redis.UniversalClient, error) {
	client, where, err := newRedisClient(cfg)
	if err != nil {
		return nil, redact(err, cfg)
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return nil, redact(fmt.Errorf("store: redis at %s unreachable: %w", where, err), cfg)
	}
	return client, nil
}

// newRedisClient builds the client for cfg without connecting. where names
// the address(es) for error messages.
func newRedisClient(cfg RedisConfig) (client redis.UniversalClient, where string, err error) {
	modes := 0
	if cfg.URL != "" {
		modes++
	}
	if cfg.SentinelMaster != "" || len(cfg.SentinelAddrs) > 0 {
		modes++
		if cfg.SentinelMaster == "" || len(cfg.SentinelAddrs) == 0 {
			return nil, "", errors.New("store: redis sentinel needs both a master name and sentinel addresses")
		}
	}
	if len(cfg.ClusterAddrs) > 0 {
		modes++
	}
	switch modes {
	case 0:
		return nil, "", errors.New("store: no redis configured (set a URL, sentinel or cluster addresses)")
	case 1:
	default:
		return nil, "", errors.New("store: redis URL, sentinel and cluster addresses are exclusive; set one")
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}

	if cfg.URL != "" {
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error repeats the whole URL, password included
			}
			return nil, "", fmt.Errorf("store: invalid redis URL: %w", err)
		}
		if cfg.Password != "" {
			o.Password = cfg.Password
		}
		if cfg.DialTimeout > 0 || o.DialTimeout == 0 {
			o.DialTimeout = timeout
		}
		o.DialerRetries, o.MaxRetries = failFast()
		// Every call honours its context's deadline (socket reads and
		// writes, pool waits): a holder's store calls keep their bounds
		// while the store is black-holed (SPEC §3 rule 17).
		o.ContextTimeoutEnabled = true
		if cfg.TLS && o.TLSConfig == nil {
			return nil, "", errors.New("store: redis TLS requested but the URL is not rediss://")
		}
		if cfg.CAFile != "" {
			if o.TLSConfig == nil {
				return nil, "", errors.New("store: redis CA file given but the URL is not rediss://")
			}
			pool, err := loadCAFile(cfg.CAFile)
			if err != nil {
				return nil, "", err
			}
			o.TLSConfig.RootCAs = pool
		}
		return redis.NewClient(o), o.Addr, nil
	}

	uo := &redis.UniversalOptions{
		Password:    cfg.Password,
		DialTimeout: timeout,
	}
	uo.DialerRetries, uo.MaxRetries = failFast()
	uo.ContextTimeoutEnabled = true // see above
	if cfg.TLS || cfg.CAFile != "" {
		uo.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := loadCAFile(cfg.CAFile)
			if err != nil {
				return nil, "", err
			}
			uo.TLSConfig.RootCAs = pool
		}
	}
	if cfg.SentinelMaster != "" {
		uo.MasterName = cfg.SentinelMaster
		uo.Addrs = cfg.SentinelAddrs
		where = fmt.Sprintf("sentinel %s (master %q)", strings.Join(cfg.SentinelAddrs, ","), cfg.SentinelMaster)
	} else {
		uo.Addrs = cfg.ClusterAddrs
		uo.IsClusterMode = true
		where = "cluster " + strings.Join(cfg.ClusterAddrs, ",")
		return newClusterClient(uo.Cluster()), where, nil
	}
	return redis.NewUniversalClient(uo), where, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: redis CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("store: redis CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// redact removes the configured passwords from err's message, keeping the
// chain for errors.Is.
func redact(err error, cfg RedisConfig) error {
	msg := err.Error()
	secrets := []string{cfg.Password}
	if cfg.URL != "" {
		if u, perr := url.Parse(cfg.URL); perr == nil && u.User != nil {
			if p, ok := u.User.Password(); ok {
				secrets = append(secrets, p, url.QueryEscape(p), url.PathEscape(p))
			}
		}
	}
	changed := false
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// failFast returns dial and command retry counts lower than go-redis's
// defaults (5 dials per try, 3 retries: ~1.8 s to fail against a down
// server), so readiness and 503s answer promptly during an outage. Retries
// stay safe: a retried compare-and-set recognises its own write.
func failFast() (dialerRetries, maxRetries int) { return 2, 1 }
