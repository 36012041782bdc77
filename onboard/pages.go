package onboard

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"
	"strings"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// page is one onboarding page shown to the merchant's browser. Pages speak
// to merchants: fixed texts, at most the name of the account the merchant
// signed in to, the last digits of the account to use instead and a
// sanitized provider error code; never a tenant id, an HTTP status, a
// code, state, verifier or token.
type page struct {
	// Kind gives the status and X-Lsproxy-Error of a failure page; nil
	// (success) answers 200 without the header.
	Kind    *httperr.Kind
	OK      bool
	Title   string
	Heading string
	Message string
	Action  string // what to do next
}

// Status is the page's HTTP status.
func (p page) Status() int {
	if p.Kind == nil {
		return http.StatusOK
	}
	return p.Kind.Status
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}} · Lightspeed connection</title>
<style>
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f5f7;color:#1d2330}
main{max-width:34rem;margin:10vh auto;padding:2rem 2.25rem;background:#fff;border-radius:10px;box-shadow:0 1px 4px rgba(0,0,0,.08)}
.brand{font-size:.8rem;letter-spacing:.08em;text-transform:uppercase;color:#6b7385;margin:0 0 1rem}
h1{font-size:1.4rem;margin:0 0 .75rem}
.ok h1{color:#137a3a}.fail h1{color:#a4262c}
.action{margin-top:1.25rem;padding:.75rem 1rem;background:#f4f5f7;border-radius:6px}
footer{margin-top:1.5rem;font-size:.8rem;color:#6b7385}
</style>
</head>
<body>
<main class="{{if .OK}}ok{{else}}fail{{end}}">
<p class="brand">Lightspeed connection</p>
<h1>{{.Heading}}</h1>
<p>{{.Message}}</p>
{{if .Action}}<p class="action">{{.Action}}</p>{{end}}
</main>
</body>
</html>
`))

// noStore sets the headers every onboarding response carries.
func noStore(h http.Header) {
	httperr.PageHeaders(h, "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("Pragma", "no-cache")
}

// renderPage writes p as a complete HTML response.
func renderPage(w http.ResponseWriter, p page) {
	countOutcome(p)
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		// Fixed template and plain strings: cannot fail; keep a fallback.
		buf.Reset()
		buf.WriteString("<!doctype html><title>Lightspeed connection</title><p>Something went wrong.</p>")
	}
	h := w.Header()
	noStore(h)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	if p.Kind != nil {
		httperr.Error{Kind: p.Kind}.SetHeaders(h)
	}
	w.WriteHeader(p.Status())
	_, _ = w.Write(buf.Bytes())
}

const askNewLink = "Ask the person who sent you the link for a new one."

var (
	pageBadLink = page{Kind: httperr.LinkInvalid, Title: "Invalid link",
		Heading: "This link is not valid",
		Message: "The connection link is incomplete or was changed. Make sure you opened the whole link exactly as you received it.",
		Action:  "Copy the complete link from the message you received, or " + lower(askNewLink)}
	pageLinkExpired = page{Kind: httperr.LinkExpired, Title: "Link expired",
		Heading: "This link has expired",
		Message: "Connection links work for a limited time, and this one is past it. Nothing was changed.",
		Action:  askNewLink}
	pageLinkUsed = page{Kind: httperr.LinkUsed, Title: "Link already used",
		Heading: "This link was already used",
		Message: "Your Lightspeed account was already connected with this link. Each link connects once; nothing was changed now.",
		Action:  "If you need to connect again, " + lower(askNewLink)}
	pageLinkRevoked = page{Kind: httperr.LinkRevoked, Title: "Link withdrawn",
		Heading: "This link was withdrawn",
		Message: "The person who sent you this link has withdrawn it. Nothing was changed.",
		Action:  askNewLink}
	pageOtherBrowser = page{Kind: httperr.StateInvalid, Title: "Different browser",
		Heading: "Finish in the browser you started in",
		Message: "This sign-in was started in another browser (or its cookies were cleared), so it cannot be finished here. Nothing was stored.",
		Action:  "Open the link you were sent again, in this browser, and finish there."}
	pageTenantGone = page{Kind: httperr.TenantGone, Title: "Connection removed",
		Heading: "This connection no longer exists",
		Message: "The connection this link was made for has been removed. Nothing was stored.",
		Action:  "Contact the person who sent you the link."}
	pageBadState = page{Kind: httperr.StateInvalid, Title: "Sign-in not recognised",
		Heading: "This sign-in could not be matched",
		Message: "The answer from Lightspeed belongs to no sign-in in progress: it was already used, it expired, or the page was reloaded. Nothing was stored.",
		Action:  "Open the link you were sent again to start over. If it no longer works, " + lower(askNewLink)}
	pageNoCode = page{Kind: httperr.CallbackIncomplete, Title: "Incomplete answer",
		Heading: "Lightspeed's answer was incomplete",
		Message: "The redirect from Lightspeed did not include an authorization code. Nothing was stored.",
		Action:  "Open the link you were sent again to start over."}
	pageDeclined = page{Kind: httperr.AccessDenied, Title: "Access declined",
		Heading: "Access was declined",
		Message: "The connection was not approved on Lightspeed's page, so nothing was connected or stored.",
		Action:  "If this was a mistake, open the link you were sent again and choose to allow access."}
	pageCodeRejected = page{Kind: httperr.CodeRejected, Title: "Authorization not completed",
		Heading: "Lightspeed rejected the authorization",
		Message: "Lightspeed did not accept the one-time code from this sign-in. It may have expired (codes are valid for about 30 seconds) or the redirect address registered with Lightspeed does not match. Nothing was stored.",
		Action:  "Open the link you were sent again. If this keeps happening, tell the person who sent you the link."}
	pageClientRejected = page{Kind: httperr.ClientRejected, Title: "Integration not accepted",
		Heading: "Lightspeed did not accept this integration's credentials",
		Message: "The integration's client credentials were rejected by Lightspeed. This is a configuration problem on the integration's side, not in your account. Nothing was stored.",
		Action:  "Tell the person who sent you the link; they need to check the integration's client id and secret."}
	pageProviderDown = page{Kind: httperr.ProviderDown, Title: "Lightspeed unavailable",
		Heading: "Lightspeed's sign-in service did not answer",
		Message: "The authorization could not be completed because Lightspeed's token service was unavailable. Nothing was stored.",
		Action:  "Wait a few minutes, then open the link you were sent again."}
	pageStoreDown = page{Kind: httperr.StoreUnavailable, Title: "Temporarily unavailable",
		Heading: "The service is temporarily unavailable",
		Message: "The connection could not be saved right now. Nothing was changed.",
		Action:  "Wait a few minutes, then open the link you were sent again."}
	pageRefreshInFlight = page{Kind: httperr.RefreshInFlight, Title: "Try again in a minute",
		Heading: "Your account is being updated right now",
		Message: "The connection could not be saved while the account was being refreshed. Nothing was changed.",
		Action:  "Wait a minute, then open the link you were sent again."}
	pageMisconfigured = page{Kind: httperr.OnboardingMisconfigured, Title: "Not available",
		Heading: "Connecting accounts is not available",
		Message: "This service is not configured to connect Lightspeed accounts.",
		Action:  "Tell the person who sent you the link."}
	pageMethod = page{Kind: httperr.OnlyGet, Title: "Not allowed",
		Heading: "Open this link in a web browser",
		Message: "This address only works when opened in a web browser."}
)

func pageProviderError(code string) page {
	return page{Kind: httperr.ProviderError, Title: "Authorization not completed",
		Heading: "Lightspeed could not complete the authorization",
		Message: "Lightspeed answered with the error \u201c" + code + "\u201d instead of an authorization. Nothing was stored.",
		Action:  "Open the link you were sent again. If this keeps happening, tell the person who sent you the link and mention the error."}
}

func pageMissingParam(name string) page {
	what := "a required value"
	if name == "domain_prefix" {
		what = "your store's address"
	}
	return page{Kind: httperr.CallbackIncomplete, Title: "Incomplete answer",
		Heading: "Lightspeed's answer was incomplete",
		Message: "The redirect from Lightspeed did not include " + what + ". Nothing was stored.",
		Action:  "Open the link you were sent again to start over."}
}

// pageOtherAccount: the merchant signed in to another account than the
// tenant's; the tenant keeps its grant. The page names the account to use
// only by the last digits of its id (whoever signed in with another
// account learns no more of it), and the account signed in to by name.
func pageOtherAccount(expected, got store.Account) page {
	use := "the account this link was made for"
	if tail := lastDigits(expected.ID); tail != "" {
		use = "the account whose id ends in " + tail
	}
	signedIn := "another account"
	if got.Name != "" {
		signedIn = "\u201c" + got.Name + "\u201d"
	}
	return page{Kind: httperr.OtherAccount, Title: "Different account",
		Heading: "You signed in to a different Lightspeed account",
		Message: "This link is for another Lightspeed account than " + signedIn + ", the one you signed in to. Nothing was changed: the existing connection keeps working.",
		Action: "Sign out of Lightspeed, sign in to " + use + " and open the link again. " +
			"If " + signedIn + " is the account that should be connected from now on, ask the person who sent you the link for a link that allows changing the account."}
}

// lastDigits returns the last (at most) 4 characters of an account id,
// after an ellipsis; "" for an id too short to hide anything.
func lastDigits(id string) string {
	if i := strings.LastIndexByte(id, ','); i >= 0 { // several K-Series businesses
		id = id[i+1:]
	}
	r := []rune(id)
	if len(r) <= 4 {
		return ""
	}
	return "\u2026" + string(r[len(r)-4:])
}

func pageSuccess() page {
	return page{OK: true, Title: "Connected",
		Heading: "Connected", Message: "Your Lightspeed account is connected. You can close this window."}
}

// pageVerificationPending: the grant is stored; the account it belongs to
// is checked in the background (first authorization: already in use).
var pageVerificationPending = page{OK: true, Title: "Connected",
	Heading: "Connected, verification pending",
	Message: "Your Lightspeed account is connected. We are still confirming which account it is; this finishes on its own, there is nothing more for you to do. You can close this window."}

func lower(s string) string {
	if s == "" {
		return s
	}
	b := []byte(s)
	if b[0] >= 'A' && b[0] <= 'Z' {
		b[0] += 'a' - 'A'
	}
	return string(b)
}
