package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsAuthorizeCommand) }

func tenantsAuthorizeCommand(tc *tenantsCLI) *cobra.Command {
	var rebind bool
	cmd := &cobra.Command{
		Use:   "authorize TENANT",
		Short: "Print an onboarding link to send the merchant",
		Long: `Ask for an authorization link for TENANT (new or flagged) and print it. Send it
to the merchant: opening it starts the OAuth flow, and the callback stores the
grant and clears a reauthorization_required flag. The link's expiry is printed
on standard error (standard output holds only the link).

--rebind makes a link that may connect another merchant account than the one
the tenant had (for a merchant who moved to a new account; the tenant's
locations and identity are then replaced).`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var body any
			if rebind {
				body = map[string]bool{"rebind": true}
			}
			data, err := tc.client.do(cmd.Context(), "POST", tenantPath(args[0], "authorize"), nil, body)
			if err != nil {
				return err
			}
			if tc.output == "json" {
				return printJSON(tc.stdout, data)
			}
			var answer struct {
				AuthorizeURL string `json:"authorize_url"`
			}
			if err := json.Unmarshal(data, &answer); err != nil || answer.AuthorizeURL == "" {
				return fail(exitFailure, fmt.Errorf("the admin API answered without authorize_url"))
			}
			fmt.Fprintln(tc.stdout, answer.AuthorizeURL)
			if exp, ok := linkExpiry(answer.AuthorizeURL); ok {
				fmt.Fprintf(tc.stderr, "the link expires %s (%s)\n", exp.Format(time.RFC3339), relTime(&exp, time.Now()))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&rebind, "rebind", false, "the link may connect another merchant account than the tenant's")
	return cmd
}

// linkExpiry reads the expiry of a signed authorize link (its exp
// parameter, Unix seconds).
func linkExpiry(link string) (time.Time, bool) {
	u, err := url.Parse(link)
	if err != nil {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(u.Query().Get("exp"), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0).UTC(), true
}
