package config

import (
	"net/url"
	"strings"
)

// Redacted returns a copy of c safe to print: every set secret (client
// secret, admin token, encryption keys, Redis and webhook secrets) becomes
// "[redacted]", the hash part of each client key is redacted, and URL
// passwords are masked. *_FILE paths are kept. c itself is not modified (the
// copy's slices are fresh).
func (c Config) Redacted() Config {
	r := c
	for _, s := range secrets {
		if p := r.str(s.value); *p != "" {
			*p = redactedValue
		}
	}
	if c.EncryptionKeys != nil {
		r.EncryptionKeys = make([]string, len(c.EncryptionKeys))
		for i := range r.EncryptionKeys {
			r.EncryptionKeys[i] = redactedValue
		}
	}
	if c.WebhookSecrets != nil {
		r.WebhookSecrets = make([]string, len(c.WebhookSecrets))
		for i := range r.WebhookSecrets {
			r.WebhookSecrets[i] = redactedValue
		}
	}
	if c.ClientKeys != nil {
		r.ClientKeys = make([]string, len(c.ClientKeys))
		for i, k := range c.ClientKeys {
			r.ClientKeys[i] = redactClientKey(k)
		}
	}
	r.RedisSentinelAddrs = cloneStrings(c.RedisSentinelAddrs)
	r.RedisClusterAddrs = cloneStrings(c.RedisClusterAddrs)
	if c.PKCE != nil {
		b := *c.PKCE
		r.PKCE = &b
	}
	for _, n := range []string{"RedirectURL", "UpstreamURL", "AuthorizeURL", "TokenURL", "RedisURL", "SuccessURL", "WebhookURL"} {
		p := r.str(n)
		*p = redactURL(*p)
	}
	return r
}

// redactClientKey keeps the id and tenants of "id:hash:tenants" and redacts
// the hash; anything else is redacted whole.
func redactClientKey(k string) string {
	parts := strings.SplitN(k, ":", 3)
	if len(parts) != 3 {
		return redactedValue
	}
	return parts[0] + ":" + redactedValue + ":" + parts[2]
}

// redactURL masks a URL's password; an unparsable URL is redacted whole.
func redactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redactedValue
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "redacted")
		return u.String()
	}
	return raw
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}
