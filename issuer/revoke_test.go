package issuer

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// revoke posts form to /revoke.
func (ts *testSTS) revoke(t *testing.T, form url.Values, edit func(*http.Request)) *reply {
	t.Helper()
	return ts.do(t, http.MethodPost, PathRevoke, "application/x-www-form-urlencoded", form.Encode(), edit)
}

// wantRevoked: 200, no body to read, not cacheable.
func wantRevoked(t *testing.T, r *reply) {
	t.Helper()
	if r.status != http.StatusOK || r.raw != "" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("want 200 with no body: %d %q %v", r.status, r.raw, r.header)
	}
}

// entriesFor counts the store's revoke entries for the token's jti.
func (f *rsFixture) entriesFor(t *testing.T, tok string) int {
	t.Helper()
	list, err := f.srv.store.List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list {
		if e.Selector == "jti="+decodeSegment(t, tok, 1)["jti"].(string) {
			n++
		}
	}
	return n
}

// active is what the ledger resource server's introspection says of tok.
func (f *rsFixture) active(t *testing.T, tok string) bool {
	t.Helper()
	r := f.introspect(t, url.Values{"token": {tok}}, bearer(f.a.Token(t, secops)))
	if r.status != http.StatusOK {
		t.Fatalf("introspect: %d %s", r.status, r.raw)
	}
	return r.body["active"] == true
}

// TestRevokeEndpoint: RFC 7009 revocation by the token's holder or its client;
// the token is then inactive everywhere (one jti entry in the store).
func TestRevokeEndpoint(t *testing.T) {
	f := startRS(t)

	t.Run("holder revokes its bearer token", func(t *testing.T) {
		tok := f.mint(t, ledger)
		wantRevoked(t, f.revoke(t, url.Values{"token": {tok}, "token_type_hint": {"access_token"}}, nil))
		if f.active(t, tok) {
			t.Fatal("a revoked token is active at introspection")
		}
		if n := f.entriesFor(t, tok); n != 1 {
			t.Fatalf("%d jti entries, want 1", n)
		}
		// Again: 200, nothing more recorded.
		wantRevoked(t, f.revoke(t, url.Values{"token": {tok}}, nil))
		if n := f.entriesFor(t, tok); n != 1 {
			t.Fatalf("%d jti entries after a second revocation, want 1", n)
		}
		audit := f.audit.String()
		if !strings.Contains(audit, `"event":"revoke_token","outcome":"recorded"`) || !strings.Contains(audit, `"outcome":"already_revoked"`) {
			t.Fatalf("audit lacks the revocations: %s", audit)
		}
		if strings.Contains(audit, tok) || strings.Contains(audit, strings.Split(tok, ".")[2]) {
			t.Fatal("the audit log holds the token")
		}
		// Another token of the same workload is untouched.
		if other := f.mint(t, ledger); !f.active(t, other) {
			t.Fatal("revoking one token revoked another")
		}
	})

	t.Run("nothing to revoke answers 200", func(t *testing.T) {
		before, _ := f.srv.store.List(context.Background(), true)
		for name, tok := range map[string]string{
			"garbage":             "not-a-token",
			"an upstream's token": f.a.Token(t, payments),
			"expired":             f.mintRaw(t, f.url, func(c *claims) { c.IssuedAt, c.Expiry = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute) }),
			"another issuer":      f.mintRaw(t, "https://other-sts.example", func(*claims) {}),
		} {
			t.Run(name, func(t *testing.T) { wantRevoked(t, f.revoke(t, url.Values{"token": {tok}}, nil)) })
		}
		after, _ := f.srv.store.List(context.Background(), true)
		if len(after) != len(before) {
			t.Fatalf("revoking invalid tokens recorded %d entries", len(after)-len(before))
		}
	})

	t.Run("authenticated client revokes only its tokens", func(t *testing.T) {
		ciTok := f.mint(t, ledger, func(v url.Values) {
			withAssertion(v, assertion(t, f.testSTS, f.ci))
		})
		if c := decodeSegment(t, ciTok, 1); c["client_id"] != ciRunnerID {
			t.Fatalf("client_id %v", c["client_id"])
		}
		r := f.revoke(t, f.clientAuth(t, f.ledgerKeys, PathRevoke, url.Values{"token": {ciTok}}), nil)
		assertRefused(t, r, http.StatusBadRequest, "unauthorized_client")
		if !f.active(t, ciTok) {
			t.Fatal("another client's refused revocation revoked the token")
		}
		wantRevoked(t, f.revoke(t, f.clientAuth(t, f.ci, PathRevoke, url.Values{"token": {ciTok}}), nil))
		if f.active(t, ciTok) {
			t.Fatal("the client's revocation did not revoke its token")
		}
	})

	t.Run("mTLS workload revokes its token", func(t *testing.T) {
		tok := f.mintSVID(t, paySVID, ledger)
		assertRefused(t, f.via(f.mtls(t, otherSVID)).revoke(t, url.Values{"token": {tok}}, nil), http.StatusBadRequest, "unauthorized_client")
		wantRevoked(t, f.via(f.mtls(t, paySVID)).revoke(t, url.Values{"token": {tok}}, nil))
		if f.active(t, tok) {
			t.Fatal("still active")
		}
	})

	t.Run("certificate-bound token needs its workload", func(t *testing.T) {
		// Bound to the certificate it was exchanged with; revoked with it, or
		// with a later SVID of the same workload; never without mTLS.
		cert := f.mtls(t, paySVID)
		mint := func() string {
			r := f.via(cert).post(t, spiffeForm(paySVID, TypeX509SVID, vault))
			if r.status != http.StatusOK {
				t.Fatalf("exchange: %d %s", r.status, r.raw)
			}
			tok := r.body["access_token"].(string)
			if c := decodeSegment(t, tok, 1); c["cnf"] == nil {
				t.Fatalf("not bound: %v", c)
			}
			return tok
		}
		tok, later := mint(), mint()
		assertRefused(t, f.revoke(t, url.Values{"token": {tok}}, nil), http.StatusUnauthorized, codeInvalidClient)
		assertRefused(t, f.via(f.mtls(t, otherSVID)).revoke(t, url.Values{"token": {tok}}, nil), http.StatusBadRequest, "unauthorized_client")
		assertRefused(t, f.revoke(t, f.clientAuth(t, f.ci, PathRevoke, url.Values{"token": {tok}}), nil), http.StatusBadRequest, "unauthorized_client")
		if !f.active(t, tok) {
			t.Fatal("a refused revocation revoked the token")
		}
		wantRevoked(t, f.via(cert).revoke(t, url.Values{"token": {tok}}, nil))
		wantRevoked(t, f.via(f.mtls(t, paySVID)).revoke(t, url.Values{"token": {later}}, nil))
		if f.active(t, tok) || f.active(t, later) {
			t.Fatal("still active")
		}
	})

	tok := f.mint(t, ledger)
	for _, tc := range []struct {
		name   string
		method string
		ctype  string
		path   string
		body   string
		edit   func(*http.Request)
		status int
		code   string
	}{
		{name: "GET", method: http.MethodGet, status: 405, code: codeInvalidRequest},
		{name: "PUT", method: http.MethodPut, body: url.Values{"token": {tok}}.Encode(), status: 405, code: codeInvalidRequest},
		{name: "JSON body", ctype: "application/json", body: `{"token":"` + tok + `"}`, status: 400, code: codeInvalidRequest},
		{name: "no content type", ctype: "-", body: url.Values{"token": {tok}}.Encode(), status: 400, code: codeInvalidRequest},
		{name: "token in the URL", path: PathRevoke + "?token=" + tok, status: 400, code: codeInvalidRequest},
		{name: "missing token", body: "", status: 400, code: codeInvalidRequest},
		{name: "empty token", body: "token=", status: 400, code: codeInvalidRequest},
		{name: "repeated token", body: url.Values{"token": {tok, tok}}.Encode(), status: 400, code: codeInvalidRequest},
		{name: "bad escape", body: "token=%zz", status: 400, code: codeInvalidRequest},
		{name: "refresh_token hint", body: url.Values{"token": {tok}, "token_type_hint": {"refresh_token"}}.Encode(), status: 400, code: "unsupported_token_type"},
		{name: "unknown hint", body: url.Values{"token": {tok}, "token_type_hint": {"id_token"}}.Encode(), status: 400, code: "unsupported_token_type"},
		{name: "client secret", body: url.Values{"token": {tok}, "client_id": {ledgerAPI}, "client_secret": {"s"}}.Encode(), status: 401, code: codeInvalidClient},
		{name: "basic authentication", body: url.Values{"token": {tok}}.Encode(), edit: func(r *http.Request) { r.SetBasicAuth(ledgerAPI, "s") }, status: 401, code: codeInvalidClient},
		{name: "bearer header", body: url.Values{"token": {tok}}.Encode(), edit: bearer(tok), status: 401, code: codeInvalidClient},
		{name: "forged client assertion", body: url.Values{"token": {tok}, "client_assertion_type": {AssertionTypeJWTBearer}, "client_assertion": {f.a.Token(t, ledgerAPI)}}.Encode(), status: 401, code: codeInvalidClient},
		{name: "assertion without type", body: url.Values{"token": {tok}, "client_assertion": {"x"}}.Encode(), status: 400, code: codeInvalidRequest},
		{name: "token too long", body: "token=" + strings.Repeat("a", maxPresentedToken+1), status: 400, code: codeInvalidRequest},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			method, ctype, path := http.MethodPost, "application/x-www-form-urlencoded", PathRevoke
			if tc.method != "" {
				method = tc.method
			}
			switch tc.ctype {
			case "":
			case "-":
				ctype = ""
			default:
				ctype = tc.ctype
			}
			if tc.path != "" {
				path = tc.path
			}
			r := f.do(t, method, path, ctype, tc.body, tc.edit)
			assertRefused(t, r, tc.status, tc.code)
			if strings.Contains(r.raw, tok[strings.LastIndexByte(tok, '.')+1:]) || strings.Contains(r.raw, payments) {
				t.Fatalf("the refusal echoes the token or its claims: %s", r.raw)
			}
		})
	}
	if !f.active(t, tok) {
		t.Fatal("a refused request revoked the token")
	}
	if n := f.entriesFor(t, tok); n != 0 {
		t.Fatalf("refused requests recorded %d entries", n)
	}
}

// TestRevokeStoreDown: a revocation the store cannot record is 503, never 200.
func TestRevokeStoreDown(t *testing.T) {
	f := startRS(t)
	tok := f.mint(t, ledger)
	if err := f.srv.store.Close(); err != nil {
		t.Fatal(err)
	}
	r := f.revoke(t, url.Values{"token": {tok}}, nil)
	assertRefused(t, r, http.StatusServiceUnavailable, codeTemporarilyUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	_ = revocation.KindRevoke
}
