package issuer

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func validForm() url.Values {
	return url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {"a.b.c"},
		"subject_token_type": {TypeJWT},
		"audience":           {"https://ledger.internal"},
		"scope":              {"ledger.read"},
	}
}

func TestParseTokenRequest(t *testing.T) {
	cases := []struct {
		name string
		edit func(url.Values)
		raw  string // used instead of the form when set
		code string // "" = accepted
	}{
		{name: "valid", edit: func(url.Values) {}},
		{name: "id_token type", edit: func(f url.Values) { f.Set("subject_token_type", TypeIDToken) }},
		{name: "access_token type", edit: func(f url.Values) { f.Set("subject_token_type", TypeAccessToken) }},
		{name: "missing grant_type", edit: func(f url.Values) { f.Del("grant_type") }, code: codeInvalidRequest},
		{name: "unknown grant_type", edit: func(f url.Values) { f.Set("grant_type", "client_credentials") }, code: codeUnsupportedGrantType},
		{name: "duplicate grant_type", edit: func(f url.Values) { f.Add("grant_type", GrantTypeTokenExchange) }, code: codeInvalidRequest},
		{name: "missing subject_token", edit: func(f url.Values) { f.Del("subject_token") }, code: codeInvalidRequest},
		{name: "empty subject_token", edit: func(f url.Values) { f.Set("subject_token", "") }, code: codeInvalidRequest},
		{name: "duplicate subject_token", edit: func(f url.Values) { f.Add("subject_token", "x.y.z") }, code: codeInvalidRequest},
		{name: "missing subject_token_type", edit: func(f url.Values) { f.Del("subject_token_type") }, code: codeInvalidRequest},
		{name: "duplicate subject_token_type", edit: func(f url.Values) { f.Add("subject_token_type", TypeJWT) }, code: codeInvalidRequest},
		{name: "saml subject type", edit: func(f url.Values) { f.Set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2") }, code: codeInvalidRequest},
		{name: "actor without type", edit: func(f url.Values) { f.Set("actor_token", "a.b.c") }, code: codeInvalidRequest},
		{name: "actor type without token", edit: func(f url.Values) { f.Set("actor_token_type", TypeJWT) }, code: codeInvalidRequest},
		{name: "actor with type", edit: func(f url.Values) { f.Set("actor_token", "a.b.c"); f.Set("actor_token_type", TypeJWT) }},
		{name: "actor bad type", edit: func(f url.Values) { f.Set("actor_token", "a.b.c"); f.Set("actor_token_type", "urn:x") }, code: codeInvalidRequest},
		{name: "duplicate actor_token", edit: func(f url.Values) {
			f.Add("actor_token", "a.b.c")
			f.Add("actor_token", "a.b.c")
			f.Set("actor_token_type", TypeJWT)
		}, code: codeInvalidRequest},
		{name: "duplicate scope", edit: func(f url.Values) { f.Add("scope", "ledger.write") }, code: codeInvalidRequest},
		{name: "duplicate requested_token_type", edit: func(f url.Values) {
			f.Add("requested_token_type", TypeAccessToken)
			f.Add("requested_token_type", TypeAccessToken)
		}, code: codeInvalidRequest},
		{name: "requested refresh token", edit: func(f url.Values) { f.Set("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token") }, code: codeInvalidRequest},
		{name: "requested jwt", edit: func(f url.Values) { f.Set("requested_token_type", TypeJWT) }},
		{name: "two audiences", edit: func(f url.Values) { f.Add("audience", "https://b.internal") }},
		{name: "no audience", edit: func(f url.Values) { f.Del("audience") }},
		{name: "empty audience", edit: func(f url.Values) { f.Set("audience", "") }, code: codeInvalidTarget},
		{name: "audience with control char", edit: func(f url.Values) { f.Set("audience", "a\x00b") }, code: codeInvalidTarget},
		{name: "resource absolute", edit: func(f url.Values) { f.Set("resource", "https://api.example/x") }},
		{name: "resource relative", edit: func(f url.Values) { f.Set("resource", "/x") }, code: codeInvalidTarget},
		{name: "resource with fragment", edit: func(f url.Values) { f.Set("resource", "https://api.example/#f") }, code: codeInvalidTarget},
		{name: "too many targets", edit: func(f url.Values) {
			for i := range 20 {
				f.Add("audience", "a"+strings.Repeat("x", i))
			}
		}, code: codeInvalidTarget},
		{name: "scope with quote", edit: func(f url.Values) { f.Set("scope", `a"b`) }, code: codeInvalidScope},
		{name: "scope extra spaces", edit: func(f url.Values) { f.Set("scope", " a  b ") }},
		{name: "client_id accepted", edit: func(f url.Values) { f.Set("client_id", "my-client") }},
		{name: "duplicate client_id", edit: func(f url.Values) { f.Add("client_id", "a"); f.Add("client_id", "b") }, code: codeInvalidRequest},
		{name: "bad escape", raw: "grant_type=%zz", code: codeInvalidRequest},
		{name: "semicolon separator", raw: "grant_type=" + url.QueryEscape(GrantTypeTokenExchange) + ";subject_token=x", code: codeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.raw
			if body == "" {
				f := validForm()
				tc.edit(f)
				body = f.Encode()
			}
			req, e := parseTokenRequest(body)
			switch {
			case tc.code == "" && e != nil:
				t.Fatalf("refused: %v", e)
			case tc.code != "" && e == nil:
				t.Fatalf("accepted, want %s", tc.code)
			case tc.code != "" && e.Code != tc.code:
				t.Fatalf("code %s (%s), want %s", e.Code, e.Description, tc.code)
			case tc.code != "" && e.Status != 400:
				t.Fatalf("status %d, want 400", e.Status)
			case tc.code == "" && req.RequestedTokenType == "":
				t.Fatal("requested_token_type not defaulted")
			}
		})
	}
}

func TestParseScopeDedup(t *testing.T) {
	req, e := parseTokenRequest(func() string { f := validForm(); f.Set("scope", "b a b  a c"); return f.Encode() }())
	if e != nil {
		t.Fatal(e)
	}
	if want := []string{"b", "a", "c"}; !slices.Equal(req.Scopes, want) {
		t.Fatalf("scopes %q, want %q", req.Scopes, want)
	}
}

// FuzzParseTokenRequest: any body either parses into a request whose invariants
// hold, or is refused with a 4xx OAuth error; it never panics.
func FuzzParseTokenRequest(f *testing.F) {
	f.Add(validForm().Encode())
	f.Add("grant_type=x&grant_type=y")
	f.Add("subject_token=%")
	f.Add("a=b;c=d")
	f.Add("scope=" + url.QueryEscape("a b\tc"))
	f.Fuzz(func(t *testing.T, body string) {
		req, e := parseTokenRequest(body)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("bad refusal %+v", e)
			}
			return
		}
		if req.GrantType != GrantTypeTokenExchange || req.SubjectToken == "" || !slices.Contains(subjectTokenTypes, req.SubjectTokenType) {
			t.Fatalf("accepted an invalid request: %+v", req)
		}
		if (req.ActorToken == "") != (req.ActorTokenType == "") {
			t.Fatal("actor token without type accepted")
		}
		for _, s := range req.Scopes {
			if s == "" || !scopeToken(s) {
				t.Fatalf("bad scope %q accepted", s)
			}
		}
		if len(req.Audiences)+len(req.Resources) > maxTargets {
			t.Fatal("too many targets accepted")
		}
	})
}
