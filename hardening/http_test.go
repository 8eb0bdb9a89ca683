package hardening

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// TestTokenEndpointHTTP: the token endpoint's HTTP and RFC 8693 surface: methods,
// content types, parameters in the URL, repeated and missing parameters, targets,
// client authentication attempts, body and header sizes.
func TestTokenEndpointHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	subject := e.a.Token(t, payments)
	good := exchangeForm(subject, "")

	t.Run("control: a well-formed exchange is issued", func(t *testing.T) {
		e.wantIssued(t, e.postToken(t, good.Encode()))
	})

	t.Run("methods", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions, http.MethodHead} {
			t.Run(m, func(t *testing.T) {
				body := ""
				if m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions {
					body = good.Encode()
				}
				r := e.do(t, m, "/token", formHeader(), body)
				if allow := r.header.Get("Allow"); allow != http.MethodPost {
					t.Fatalf("Allow %q, want POST (%s)", allow, r)
				}
				if m == http.MethodHead {
					if r.status != http.StatusMethodNotAllowed {
						t.Fatalf("status %d, want 405", r.status)
					}
					e.wantNoLeak(t, r, subject)
					return
				}
				e.wantError(t, r, http.StatusMethodNotAllowed, "invalid_request", subject)
			})
		}
		t.Run("GET with the request in the query", func(t *testing.T) {
			r := e.do(t, http.MethodGet, "/token?"+good.Encode(), nil, "")
			e.wantError(t, r, http.StatusMethodNotAllowed, "invalid_request", subject)
		})
	})

	t.Run("content type", func(t *testing.T) {
		jsonBody, _ := json.Marshal(map[string]string{
			"grant_type": stsclient.GrantTypeTokenExchange, "subject_token": subject,
			"subject_token_type": stsclient.TypeJWT, "audience": ledger,
		})
		for _, tc := range []struct {
			name, ct, body string
		}{
			{"none", "", good.Encode()},
			{"json", "application/json", string(jsonBody)},
			{"json claiming form", "application/json", good.Encode()},
			{"text/plain", "text/plain", good.Encode()},
			{"multipart", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\n" + stsclient.GrantTypeTokenExchange + "\r\n--x--\r\n"},
			{"form-like prefix", "application/x-www-form-urlencoded-evil", good.Encode()},
			{"unparsable", "application/x-www-form-urlencoded; ===", good.Encode()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := http.Header{}
				if tc.ct != "" {
					h.Set("Content-Type", tc.ct)
				}
				e.wantError(t, e.do(t, http.MethodPost, "/token", h, tc.body), http.StatusBadRequest, "invalid_request", subject)
			})
		}
		t.Run("control: form with charset", func(t *testing.T) {
			h := http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=UTF-8"}}
			e.wantIssued(t, e.do(t, http.MethodPost, "/token", h, good.Encode()))
		})
	})

	t.Run("parameters in the URL", func(t *testing.T) {
		for _, tc := range []struct{ name, query, body string }{
			{"whole request in the query, empty body", good.Encode(), ""},
			{"subject_token in the query", "subject_token=" + url.QueryEscape(subject), good.Encode()},
			{"harmless extra in the query", "x=1", good.Encode()},
			{"audience in the query", "audience=" + url.QueryEscape(evilAud), good.Encode()},
			{"bare question mark and key", "debug", good.Encode()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(t, http.MethodPost, "/token?"+tc.query, formHeader(), tc.body)
				e.wantError(t, r, http.StatusBadRequest, "invalid_request", subject)
			})
		}
	})

	t.Run("repeated single-valued parameter", func(t *testing.T) {
		for _, tc := range []struct{ name, extra string }{
			{"grant_type", "grant_type=" + url.QueryEscape(stsclient.GrantTypeTokenExchange)},
			{"grant_type other value", "grant_type=client_credentials"},
			{"subject_token", "subject_token=" + url.QueryEscape(e.a.Token(t, outsider))},
			{"subject_token same value", "subject_token=" + url.QueryEscape(subject)},
			{"subject_token_type", "subject_token_type=" + url.QueryEscape(stsclient.TypeIDToken)},
			{"scope", "scope=ledger.write"},
			{"scope same value", "scope=ledger.read"},
			{"requested_token_type", "requested_token_type=" + url.QueryEscape(stsclient.TypeAccessToken) + "&requested_token_type=" + url.QueryEscape(stsclient.TypeJWT)},
			{"actor_token", "actor_token=a&actor_token=b&actor_token_type=" + url.QueryEscape(stsclient.TypeJWT)},
			{"actor_token_type", "actor_token=" + url.QueryEscape(subject) + "&actor_token_type=" + url.QueryEscape(stsclient.TypeJWT) + "&actor_token_type=" + url.QueryEscape(stsclient.TypeJWT)},
			{"client_id", "client_id=a&client_id=b"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e.wantError(t, e.postToken(t, good.Encode()+"&"+tc.extra), http.StatusBadRequest, "invalid_request", subject)
			})
		}
	})

	t.Run("missing or malformed parameter", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			edit   func(url.Values)
			status int
			code   string
		}{
			{"no grant_type", func(v url.Values) { v.Del("grant_type") }, 400, "invalid_request"},
			{"empty grant_type", func(v url.Values) { v.Set("grant_type", "") }, 400, "invalid_request"},
			{"other grant_type", func(v url.Values) { v.Set("grant_type", "client_credentials") }, 400, "unsupported_grant_type"},
			{"grant_type differing in case", func(v url.Values) { v.Set("grant_type", strings.ToUpper(stsclient.GrantTypeTokenExchange)) }, 400, "unsupported_grant_type"},
			{"no subject_token", func(v url.Values) { v.Del("subject_token") }, 400, "invalid_request"},
			{"empty subject_token", func(v url.Values) { v.Set("subject_token", "") }, 400, "invalid_request"},
			{"no subject_token_type", func(v url.Values) { v.Del("subject_token_type") }, 400, "invalid_request"},
			{"unsupported subject_token_type", func(v url.Values) { v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2") }, 400, "invalid_request"},
			{"actor_token without its type", func(v url.Values) { v.Set("actor_token", subject) }, 400, "invalid_request"},
			{"actor_token_type without a token", func(v url.Values) { v.Set("actor_token_type", stsclient.TypeJWT) }, 400, "invalid_request"},
			{"unsupported requested_token_type", func(v url.Values) {
				v.Set("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")
			}, 400, "invalid_request"},
			{"client_id with a control character", func(v url.Values) { v.Set("client_id", "a\x00b") }, 400, "invalid_request"},
			{"no audience nor resource", func(v url.Values) { v.Del("audience") }, 400, "invalid_target"},
			{"empty audience", func(v url.Values) { v.Set("audience", "") }, 400, "invalid_target"},
			{"resource with a fragment", func(v url.Values) { v.Set("resource", ledger+"#x") }, 400, "invalid_target"},
			{"relative resource", func(v url.Values) { v.Set("resource", "/ledger") }, 400, "invalid_target"},
			{"17 targets", func(v url.Values) {
				for range 16 {
					v.Add("audience", ledger)
				}
			}, 400, "invalid_target"},
			{"scope not granted", func(v url.Values) { v.Set("scope", "ledger.read ledger.admin") }, 400, "invalid_scope"},
			{"malformed scope", func(v url.Values) { v.Set("scope", "ledger.read \"x\"") }, 400, "invalid_scope"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				v := exchangeForm(subject, "")
				tc.edit(v)
				e.wantError(t, e.postToken(t, v.Encode()), tc.status, tc.code, subject)
			})
		}
	})

	t.Run("several targets", func(t *testing.T) {
		t.Run("control: every one granted", func(t *testing.T) {
			v := exchangeForm(subject, "")
			v.Add("audience", auditAud)
			tok := e.wantIssued(t, e.postToken(t, v.Encode()))
			claims := payloadOf(t, tok)
			aud, _ := claims["aud"].([]any)
			if len(aud) != 2 || aud[0] != ledger || aud[1] != auditAud {
				t.Fatalf("aud %v, want [%s %s]", claims["aud"], ledger, auditAud)
			}
		})
		for _, tc := range []struct {
			name    string
			targets url.Values
		}{
			{"one audience refused", url.Values{"audience": {ledger, evilAud}}},
			{"refused audience first", url.Values{"audience": {evilAud, ledger}}},
			{"one resource refused", url.Values{"audience": {ledger}, "resource": {evilAud + "/x"}}},
			{"granted audience plus a near miss", url.Values{"audience": {ledger, ledger + "/"}}},
			{"all granted but one differing in case", url.Values{"audience": {ledger, auditAud, strings.ToUpper(ledger)}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				v := exchangeForm(subject, "")
				v.Del("audience")
				for k, vs := range tc.targets {
					v[k] = vs
				}
				e.wantError(t, e.postToken(t, v.Encode()), http.StatusBadRequest, "invalid_target", subject)
			})
		}
	})

	t.Run("client authentication", func(t *testing.T) {
		const clientSecret = "hunter2-hardening"
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("hardening-client:"+clientSecret))
		for _, tc := range []struct {
			name   string
			header string
			extra  string
			status int
			code   string
		}{
			{"client_secret", "", "client_id=hardening-client&client_secret=" + clientSecret, 401, "invalid_client"},
			{"empty client_secret", "", "client_secret=", 401, "invalid_client"},
			{"HTTP Basic", basic, "", 401, "invalid_client"},
			{"Basic and client_secret", basic, "client_secret=" + clientSecret, 400, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := formHeader()
				if tc.header != "" {
					h.Set("Authorization", tc.header)
				}
				body := good.Encode()
				if tc.extra != "" {
					body += "&" + tc.extra
				}
				r := e.do(t, http.MethodPost, "/token", h, body)
				e.wantError(t, r, tc.status, tc.code, subject, clientSecret, "hardening-client")
				if tc.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
	})

	t.Run("sizes", func(t *testing.T) {
		t.Run("body over 64 KiB", func(t *testing.T) {
			v := exchangeForm(subject, "")
			v.Set("client_id", strings.Repeat("x", 65<<10))
			e.wantError(t, e.postToken(t, v.Encode()), http.StatusRequestEntityTooLarge, "invalid_request", subject)
		})
		t.Run("body over 64 KiB in the subject token", func(t *testing.T) {
			v := exchangeForm(subject+strings.Repeat("A", 70<<10), "")
			e.wantError(t, e.postToken(t, v.Encode()), http.StatusRequestEntityTooLarge, "invalid_request", subject)
		})
		t.Run("body of 10 MB", func(t *testing.T) {
			r := e.postToken(t, good.Encode()+"&pad="+strings.Repeat("A", 10<<20))
			e.wantError(t, r, http.StatusRequestEntityTooLarge, "invalid_request", subject)
		})
		t.Run("one header of 64 KiB", func(t *testing.T) {
			h := formHeader()
			h.Set("X-Pad", strings.Repeat("A", 64<<10))
			r := e.do(t, http.MethodPost, "/token", h, good.Encode())
			if r.status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431 (%s)", r.status, r)
			}
			e.wantNoLeak(t, r, subject)
		})
		t.Run("many headers", func(t *testing.T) {
			h := formHeader()
			for i := range 2000 {
				h.Set("X-Pad-"+strings.Repeat("p", i%7)+string(rune('a'+i%26))+strings.Repeat("q", i/26), "v")
			}
			r := e.do(t, http.MethodPost, "/token", h, good.Encode())
			if r.status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431 (%s)", r.status, r)
			}
		})
		t.Run("control: still serving", func(t *testing.T) {
			e.wantIssued(t, e.postToken(t, good.Encode()))
		})
	})
}

// payloadOf decodes a token's payload without verifying it.
func payloadOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
