package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func freePortCmd() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

func waitCmd(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	u := fs.String("url", "", "URL to poll")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	_ = fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(*u)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %v (last error: %v)", *u, *timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a process that gives no signal
	}
}

// importCmd imports tenants through PUT /admin/tenants/{id}. Tokens are
// synthetic (the bench upstream accepts any bearer token) or, with -grants,
// real grants issued by the emulator's control API (POST /grant), so that
// lsproxy can refresh them at the emulator's token endpoint.
func importCmd(args []string) error {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	admin := fs.String("admin", "", "lsproxy control base URL")
	adminToken := fs.String("admin-token", "", "LSPROXY_ADMIN_TOKEN")
	n := fs.Int("tenants", 10, "number of tenants")
	prefix := fs.String("prefix", "t", "tenant id prefix")
	conc := fs.Int("concurrency", 8, "parallel PUTs")
	grants := fs.String("grants", "", "emulator control base URL: import real grants from POST /grant")
	expiresIn := fs.Int("expires-in", 86400, "access token lifetime in seconds given on import")
	spread := fs.Int("expires-spread", 0, "spread lifetimes over expires-in .. expires-in+spread seconds")
	tokenLen := fs.Int("token-len", 40, "synthetic access token length")
	_ = fs.Parse(args)
	if *admin == "" || *adminToken == "" {
		return fmt.Errorf("-admin and -admin-token are required")
	}
	client := &http.Client{Timeout: 30 * time.Second}
	start := time.Now()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				id := tenantID(*prefix, i)
				body := map[string]any{
					"refresh_token": "rt-" + id,
					"access_token":  synthToken(id, *tokenLen),
					"expires_in":    *expiresIn,
				}
				if *spread > 0 {
					body["expires_in"] = *expiresIn + i**spread / *n
				}
				if *grants != "" {
					g, err := fetchGrant(client, *grants, id)
					if err != nil {
						errOnce.Do(func() { firstErr = err })
						return
					}
					body["refresh_token"], body["access_token"] = g.RefreshToken, g.AccessToken
				}
				if err := putTenant(client, *admin, *adminToken, id, body); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	fmt.Printf("imported %d tenants in %.1fs\n", *n, time.Since(start).Seconds())
	return nil
}

func synthToken(id string, n int) string {
	s := "at-" + id + "-"
	for len(s) < n {
		s += "0123456789abcdef"
	}
	return s[:n]
}

type grant struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func fetchGrant(c *http.Client, base, id string) (grant, error) {
	resp, err := c.Post(strings.TrimRight(base, "/")+"/grant?tenant="+id, "", nil)
	if err != nil {
		return grant{}, err
	}
	defer resp.Body.Close()
	var g grant
	if resp.StatusCode != http.StatusOK {
		return g, fmt.Errorf("emulator /grant: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		return g, fmt.Errorf("emulator /grant: %w", err)
	}
	return g, nil
}

// putTenant imports one tenant, replacing whatever an earlier scenario left
// under the same id (overwrite=true: PUT refuses another refresh token
// otherwise, SPEC §3 rule 19).
func putTenant(c *http.Client, base, token, id string, body map[string]any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPut, strings.TrimRight(base, "/")+"/admin/tenants/"+id+"?overwrite=true", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT tenant %s: status %d: %s", id, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}
