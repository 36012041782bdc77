package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lsproxy/lsproxy/control"
)

// webhooksCommand is `lsproxy webhooks`: the webhook outbox through a
// running lsproxy's admin API (same flags and environment as `tenants`).
func (c *cli) webhooksCommand() *cobra.Command {
	tc := &tenantsCLI{cli: c}
	cmd := &cobra.Command{
		Use:   "webhooks",
		Short: "List failed and dead webhook events and redeliver them (admin API)",
		Long: `List the webhook events in the store's outbox that failed or became dead
letters, and redeliver them, through the admin API of a running lsproxy (found
and authenticated as for "lsproxy tenants").`,
		Args:              cobra.NoArgs,
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(*cobra.Command, []string) error { return tc.setup() },
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&tc.adminURL, "admin-url", "", "admin API base URL (default $LSPROXY_ADMIN_URL or "+defaultAdminURL+")")
	pf.StringVar(&tc.tokenFile, "admin-token-file", "", "file holding the admin token (default $LSPROXY_ADMIN_TOKEN, $LSPROXY_ADMIN_TOKEN_FILE)")
	pf.StringVarP(&tc.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&tc.timeout, "timeout", 30*time.Second, "timeout of each admin API request")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(webhooksListCommand(tc), webhooksRedeliverCommand(tc))
	return cmd
}

func webhooksListCommand(tc *tenantsCLI) *cobra.Command {
	var state, tenant string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--state dead|failed|queued|recent] [--tenant TENANT] [--limit N]",
		Short: "List dead letters (default), failed or all queued webhook events",
		Example: `  lsproxy webhooks list
  lsproxy webhooks list --state failed
  lsproxy webhooks list --tenant acme --state queued -o json
  lsproxy webhooks list --tenant acme --state recent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "dead" && state != "failed" && state != "queued" && state != "recent" {
				return fail(exitUsage, fmt.Errorf("--state %q: want dead, failed, queued or recent", state))
			}
			if state == "recent" && tenant == "" {
				return fail(exitUsage, errors.New("--state recent needs --tenant"))
			}
			if limit < 1 || limit > 1000 {
				return fail(exitUsage, fmt.Errorf("--limit %d: want 1 to 1000", limit))
			}
			q := url.Values{"state": {state}, "limit": {strconv.Itoa(limit)}}
			if tenant != "" {
				q.Set("tenant", tenant)
			}
			data, err := tc.client.do(cmd.Context(), "GET", "/admin/webhooks/events", q, nil)
			if err != nil {
				return err
			}
			if tc.output == "json" {
				_, err := tc.stdout.Write(append(data, '\n'))
				return err
			}
			var v control.WebhookEventsView
			if err := json.Unmarshal(data, &v); err != nil {
				return fail(exitFailure, fmt.Errorf("decoding the admin API's answer: %w", err))
			}
			return printWebhookEvents(tc, v)
		},
	}
	cmd.Flags().StringVar(&state, "state", "dead", "dead (dead letters), failed (queued, the last attempt failed), queued (every undelivered event) or recent (a --tenant's last outcomes, delivered or dead)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's events")
	cmd.Flags().IntVar(&limit, "limit", 100, "show at most N events (1 to 1000)")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"dead", "failed", "queued", "recent"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func printWebhookEvents(tc *tenantsCLI, v control.WebhookEventsView) error {
	w := tabwriter.NewWriter(tc.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTENANT\tTYPE\tSTATE\tCREATED\tATTEMPTS\tNEXT/DEAD\tLAST ERROR")
	for _, e := range v.Events {
		when := "-"
		switch {
		case e.DeliveredAt != nil:
			when = "delivered " + e.DeliveredAt.Format(time.RFC3339)
		case e.DeadAt != nil:
			when = "dead " + e.DeadAt.Format(time.RFC3339)
		case e.NextAttemptAt != nil:
			when = "next " + e.NextAttemptAt.Format(time.RFC3339)
		}
		tenant := e.Tenant
		if tenant == "" {
			tenant = "-"
		}
		lastErr := e.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, tenant, e.Type, e.State, e.CreatedAt.Format(time.RFC3339), e.Attempts, when, lastErr)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	oldest := "-"
	if v.OldestQueuedAt != nil {
		oldest = v.OldestQueuedAt.Format(time.RFC3339)
	}
	_, err := fmt.Fprintf(tc.stdout, "outbox: %d queued (oldest %s), %d dead\n", v.Queued, oldest, v.Dead)
	return err
}

func webhooksRedeliverCommand(tc *tenantsCLI) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "redeliver EVENT_ID | --all",
		Short: "Send a dead or failed webhook event again (or every one with --all)",
		Long: `Redeliver a webhook event (POST /admin/webhooks/events/{id}/redeliver): a dead
letter goes back to the end of its tenant's queue with a fresh retry schedule; a
failed event waiting for its next attempt is tried now. --all does this for
every dead and failed event (POST /admin/webhooks/redeliver), e.g. after the
receiver is back.`,
		Example: `  lsproxy webhooks redeliver evt_0123456789abcdef0123456789abcdef
  lsproxy webhooks redeliver --all`,
		Args: func(_ *cobra.Command, args []string) error {
			if (all && len(args) == 0) || (!all && len(args) == 1) {
				return nil
			}
			return fail(exitUsage, errors.New("give one EVENT_ID or --all"))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/admin/webhooks/redeliver"
			if !all {
				path = "/admin/webhooks/events/" + url.PathEscape(args[0]) + "/redeliver"
			}
			data, err := tc.client.do(cmd.Context(), "POST", path, nil, nil)
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == "unknown_event" {
				return fail(exitNotFound, ae)
			}
			if err != nil {
				return err
			}
			if tc.output == "json" {
				_, err := tc.stdout.Write(append(data, '\n'))
				return err
			}
			var v struct {
				Redelivered int `json:"redelivered"`
			}
			if err := json.Unmarshal(data, &v); err != nil {
				return fail(exitFailure, fmt.Errorf("decoding the admin API's answer: %w", err))
			}
			_, err = fmt.Fprintf(tc.stdout, "%d event(s) redelivered\n", v.Redelivered)
			return err
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "redeliver every dead and failed event")
	return cmd
}
