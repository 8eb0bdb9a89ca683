package hardening

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// adminCall is one request to the admin API, introspection or the feed.
type adminCall struct {
	method, path, contentType, body string
}

func (c adminCall) String() string { return c.method + " " + c.path }

// call sends c with the Authorization header auth ("" = none).
func (e *env) call(t *testing.T, c adminCall, auth string) response {
	t.Helper()
	h := http.Header{}
	if c.contentType != "" {
		h.Set("Content-Type", c.contentType)
	}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	return e.do(t, c.method, c.path, h, c.body)
}

// TestAdminAPI: the admin API, introspection and the revocation feed refuse every
// caller policy does not name (401 without a valid credential, 403 with one),
// whatever the path spelling or method, and nothing is ever recorded.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	minted := e.wantIssued(t, e.exchange(t, e.a.Token(t, payments), ""))
	admin := "Bearer " + e.corp.Token(t, alice)

	revokeBody := `{"selector":"upstream=cluster-a,sub=` + payments + `","kind":"revoke","reason":"hardening"}`
	calls := []adminCall{
		{http.MethodPost, "/admin/v1/revocations", "application/json", revokeBody},
		{http.MethodPost, "/admin/v1/revocations", "application/json", `{"selector":"upstream=cluster-a","kind":"block","reason":"hardening","for":"1h"}`},
		{http.MethodGet, "/admin/v1/revocations", "", ""},
		{http.MethodGet, "/admin/v1/revocations?all=true", "", ""},
		{http.MethodDelete, "/admin/v1/revocations/0123456789abcdef", "", ""},
		{http.MethodPost, "/admin/v1/workloads/change", "application/json", `{"upstream":"pods","subject":"` + payments + `","attributes":{"pod_uid":"u2"}}`},
		{http.MethodPost, "/admin/v1/keys/revoke", "application/json", `{"kid":"hardening-kid","reason":"hardening"}`},
		{http.MethodPost, "/introspect", "application/x-www-form-urlencoded", url.Values{"token": {minted}}.Encode()},
		{http.MethodGet, "/revocations", "", ""},
		{http.MethodGet, "/revocations/stream", "", ""},
		{http.MethodGet, "/revocations/stream?cursor=0", "", ""},
	}

	const change, keyRevoke, introspect = 5, 6, 7 // indexes in calls

	t.Run("control: the admin is served", func(t *testing.T) {
		r := e.call(t, adminCall{http.MethodGet, "/admin/v1/revocations", "", ""}, admin)
		if r.status != http.StatusOK {
			t.Fatalf("admin list: %s", r)
		}
		r = e.call(t, calls[introspect], admin)
		var intro map[string]any
		if r.status != http.StatusOK || json.Unmarshal(r.body, &intro) != nil || intro["active"] != true {
			t.Fatalf("admin introspection of a fresh token: %s", r)
		}
		if r := e.call(t, adminCall{http.MethodGet, "/revocations", "", ""}, admin); r.status != http.StatusOK {
			t.Fatalf("admin feed snapshot: %s", r)
		}
	})

	otherAud := e.corp.Token(t, alice, func(c map[string]any) { c["aud"] = ledger })
	expired := e.corp.Token(t, alice, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
	forged := compact(t, obj("alg", "ES256", "kid", e.corp.ECKid, "typ", "JWT"), mustJSON(e.corp.Claims(alice)), "ES256", newAttacker(t).EC)
	unsigned := b64([]byte(obj("alg", "none", "typ", "JWT"))) + "." + b64([]byte(mustJSON(e.corp.Claims(alice)))) + "."
	workload := e.a.Token(t, payments)
	creds := []struct {
		name, auth string
		status     int
		code       string
	}{
		{"no credential", "", 401, "invalid_token"},
		{"garbage bearer", "Bearer garbage", 401, "invalid_token"},
		{"empty bearer", "Bearer ", 401, "invalid_token"},
		{"bearer without scheme", admin[len("Bearer "):], 401, "invalid_token"},
		{"HTTP Basic", "Basic " + base64.StdEncoding.EncodeToString([]byte(alice+":pw")), 401, "invalid_token"},
		{"admin's IdP token for another audience", "Bearer " + otherAud, 401, "invalid_token"},
		{"admin's IdP token, expired", "Bearer " + expired, 401, "invalid_token"},
		{"admin's IdP token, forged", "Bearer " + forged, 401, "invalid_token"},
		{"admin's IdP token, alg none", "Bearer " + unsigned, 401, "invalid_token"},
		{"a token minted by the STS (audience ledger)", "Bearer " + minted, 401, "invalid_token"},
		{"a workload's valid token", "Bearer " + workload, 403, "insufficient_scope"},
	}
	presented := []string{minted, otherAud, expired, forged, unsigned, workload, admin[len("Bearer "):]}

	t.Run("refused callers", func(t *testing.T) {
		for _, c := range calls {
			for _, cr := range creds {
				t.Run(c.String()+"/"+cr.name, func(t *testing.T) {
					r := e.call(t, c, cr.auth)
					code := cr.code
					if c.path == "/introspect" && strings.HasPrefix(cr.auth, "Basic ") {
						// RFC 7662 clients authenticate at /introspect: HTTP
						// Basic is client_secret_basic, which is not supported.
						code = "invalid_client"
					}
					e.wantError(t, r, cr.status, code, presented...)
					if cr.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
						t.Error("401 without WWW-Authenticate")
					}
				})
			}
		}
	})

	// Path spellings, methods and trailing slashes: never a 2xx. A redirect to the
	// canonical path (net/http's ServeMux cleans paths so) is followed once and
	// must then be refused like the canonical path.
	tricks := []adminCall{
		{http.MethodGet, "//admin/v1/revocations", "", ""},
		{http.MethodPost, "//admin/v1/revocations", "application/json", revokeBody},
		{http.MethodGet, "/admin/v1/revocations/", "", ""},
		{http.MethodPost, "/admin/v1/revocations/", "application/json", revokeBody},
		{http.MethodDelete, "/admin/v1/revocations/", "", ""},
		{http.MethodGet, "/admin%2Fv1%2Frevocations", "", ""},
		{http.MethodPost, "/admin%2Fv1%2Frevocations", "application/json", revokeBody},
		{http.MethodGet, "/admin/v1%2Frevocations", "", ""},
		{http.MethodGet, "/admin/v1/revocations%2F", "", ""},
		{http.MethodGet, "/admin/v1//revocations", "", ""},
		{http.MethodGet, "/admin/v1/./revocations", "", ""},
		{http.MethodGet, "/admin/v1/x/../revocations", "", ""},
		{http.MethodPost, "/admin/v1/x/../revocations", "application/json", revokeBody},
		{http.MethodGet, "/admin/v1/%72evocations", "", ""},
		{http.MethodGet, "/ADMIN/v1/revocations", "", ""},
		{http.MethodGet, "/Admin/V1/Revocations", "", ""},
		{http.MethodGet, "/admin/v1/revocations;x=1", "", ""},
		{http.MethodHead, "/admin/v1/revocations", "", ""},
		{http.MethodOptions, "/admin/v1/revocations", "", ""},
		{http.MethodPut, "/admin/v1/revocations", "application/json", revokeBody},
		{http.MethodPatch, "/admin/v1/revocations", "application/json", revokeBody},
		{http.MethodDelete, "/admin/v1/revocations", "", ""},
		{http.MethodDelete, "/admin/v1/revocations/%2e%2e", "", ""},
		{http.MethodDelete, "/admin/v1/revocations/..%2F..%2Fx", "", ""},
		{http.MethodDelete, "/admin/v1/revocations/x/y", "", ""},
		{http.MethodPost, "//admin/v1/workloads/change", "application/json", calls[change].body},
		{http.MethodPost, "/admin/v1/workloads/change/", "application/json", calls[change].body},
		{http.MethodPost, "/admin/v1/workloads%2Fchange", "application/json", calls[change].body},
		{http.MethodPost, "//admin/v1/keys/revoke", "application/json", calls[keyRevoke].body},
		{http.MethodPost, "//introspect", "application/x-www-form-urlencoded", calls[introspect].body},
		{http.MethodPost, "/introspect/", "application/x-www-form-urlencoded", calls[introspect].body},
		{http.MethodGet, "/introspect", "", ""},
		{http.MethodHead, "/revocations", "", ""},
		{http.MethodGet, "//revocations", "", ""},
		{http.MethodGet, "/revocations/", "", ""},
		{http.MethodGet, "/revocations/stream/", "", ""},
		{http.MethodGet, "/revocations%2Fstream", "", ""},
		{http.MethodGet, "/admin/v1/", "", ""},
		{http.MethodGet, "/admin/", "", ""},
	}
	refused := []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed}
	t.Run("path tricks", func(t *testing.T) {
		for _, c := range tricks {
			for _, cr := range []struct{ name, auth string }{{"no credential", ""}, {"workload", "Bearer " + workload}} {
				t.Run(c.String()+"/"+cr.name, func(t *testing.T) {
					r := e.call(t, c, cr.auth)
					if r.status >= 300 && r.status < 400 {
						loc := r.header.Get("Location")
						if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
							t.Fatalf("redirect off the server: Location %q (%s)", loc, r)
						}
						t.Logf("%d to %s", r.status, loc)
						r = e.call(t, adminCall{c.method, loc, c.contentType, c.body}, cr.auth)
					}
					if !slices.Contains(refused, r.status) {
						t.Fatalf("status %d, want one of %v (%s)", r.status, refused, r)
					}
					e.wantNoLeak(t, r, presented...)
				})
			}
		}
	})

	// Who is asking is settled before the request is read: an unauthenticated
	// caller learns nothing from how its body is judged (which upstreams or
	// issuers exist, which upstreams bind tokens, the selector grammar).
	t.Run("authentication precedes request validation", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			call adminCall
			bug  string
		}{
			{"malformed selector", adminCall{http.MethodPost, "/admin/v1/revocations", "application/json", `{"selector":"sub=*","reason":"x"}`},
				"POST /admin/v1/revocations parses the body and the selector before authenticating: 400 with the parser's message to a caller without credentials"},
			{"selector naming an unconfigured issuer", adminCall{http.MethodPost, "/admin/v1/revocations", "application/json", `{"selector":"iss=https://nope.example","reason":"x"}`},
				"POST /admin/v1/revocations resolves iss= before authenticating: a caller without credentials learns which issuers are configured (400 for an unknown one, 401 for a configured one)"},
			{"body not JSON", adminCall{http.MethodPost, "/admin/v1/revocations", "text/plain", "x"},
				"POST /admin/v1/revocations checks the content type before authenticating (400 instead of 401)"},
			{"change report for an upstream without bindings", adminCall{http.MethodPost, "/admin/v1/workloads/change", "application/json", `{"upstream":"cluster-a","subject":"x"}`},
				"POST /admin/v1/workloads/change checks the upstream before authenticating: a caller without credentials learns which upstreams bind tokens (400 'upstream must name an upstream with binding_attributes' for any other name, 401 for one that binds)"},
			{"change report with unknown fields", adminCall{http.MethodPost, "/admin/v1/workloads/change", "application/json", `{"x":1}`},
				"POST /admin/v1/workloads/change parses the body before authenticating (400 instead of 401)"},
			{"key revocation without kid", adminCall{http.MethodPost, "/admin/v1/keys/revoke", "application/json", `{"reason":"x"}`},
				"POST /admin/v1/keys/revoke validates the body before authenticating (400 instead of 401)"},
			{"introspection without token parameter", adminCall{http.MethodPost, "/introspect", "application/x-www-form-urlencoded", ""}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.bug != "" {
					skipBug(t, tc.bug)
				}
				e.wantError(t, e.call(t, tc.call, ""), http.StatusUnauthorized, "invalid_token", "nope.example")
			})
		}
	})

	// Nothing was recorded by any of the above.
	r := e.call(t, adminCall{http.MethodGet, "/admin/v1/revocations?all=true", "", ""}, admin)
	var list struct{ Entries []json.RawMessage }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil {
		t.Fatalf("admin list: %s", r)
	}
	if len(list.Entries) != 0 {
		t.Fatalf("refused callers changed the revocation store: %s", r)
	}
	e.wantIssued(t, e.exchange(t, e.a.Token(t, payments), ""))
}
