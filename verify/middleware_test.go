package verify

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMiddleware(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	var seen *Token
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := TokenFromContext(r.Context())
		if !ok {
			t.Error("no token in the request context")
		}
		seen = tok
		w.WriteHeader(http.StatusNoContent)
	}))
	good := sts.mint(t, func(c map[string]any) { c["jti"] = "mw-good" })
	revoked := sts.mint(t, func(c map[string]any) { c["jti"] = "mw-revoked" })
	_, cursor := sts.feed.create("revoke", "jti=mw-revoked")
	waitCursor(t, v, cursor)

	const invalidToken = `Bearer error="invalid_token", error_description="the access token is not valid"`
	cases := []struct {
		name      string
		header    []string // Authorization values
		status    int
		challenge string // WWW-Authenticate
		code      string // error in the JSON body
	}{
		{"good", []string{"Bearer " + good}, http.StatusNoContent, "", ""},
		{"scheme is case-insensitive", []string{"bearer " + good}, http.StatusNoContent, "", ""},
		{"missing", nil, http.StatusUnauthorized, "Bearer", ""},
		{"another scheme", []string{"Basic dXNlcjpwYXNz"}, http.StatusUnauthorized, "Bearer", ""},
		{"garbled", []string{"Bearer eyJhbGciOi.garbage.x"}, http.StatusUnauthorized, invalidToken, "invalid_token"},
		{"not base64 at all", []string{"Bearer !!!"}, http.StatusUnauthorized, invalidToken, "invalid_token"},
		{"revoked", []string{"Bearer " + revoked}, http.StatusUnauthorized, invalidToken, "invalid_token"},
		{"wrong typ", []string{"Bearer " + signToken(t, sts.keys[0], "JWT", sts.claims())}, http.StatusUnauthorized, invalidToken, "invalid_token"},
		{"bearer without token", []string{"Bearer "}, http.StatusBadRequest, `Bearer error="invalid_request"`, "invalid_request"},
		{"two Authorization headers", []string{"Bearer " + good, "Bearer " + good}, http.StatusBadRequest, `Bearer error="invalid_request"`, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen = nil
			r := httptest.NewRequest(http.MethodGet, "/v1/balance", nil)
			for _, h := range tc.header {
				r.Header.Add("Authorization", h)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			checkResponse(t, w, tc.status, tc.challenge, tc.code)
			if tc.status == http.StatusNoContent {
				if seen == nil || seen.ID != "mw-good" || seen.Subject != "spiffe://example.org/ns/payments/sa/api" || !seen.HasScope("ledger.read") {
					t.Errorf("token in context = %+v", seen)
				}
			} else if seen != nil {
				t.Error("the handler ran for a refused request")
			}
		})
	}

	t.Run("stale is 503", func(t *testing.T) {
		sts.clock.Advance(DefaultMaxStale + time.Second)
		r := httptest.NewRequest(http.MethodGet, "/v1/balance", nil)
		r.Header.Set("Authorization", "Bearer "+good)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		checkResponse(t, w, http.StatusServiceUnavailable, "", "temporarily_unavailable")
		if w.Header().Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		// A token known to be revoked is still refused as such.
		r.Header.Set("Authorization", "Bearer "+revoked)
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		checkResponse(t, w, http.StatusUnauthorized, invalidToken, "invalid_token")
	})
}

func TestMiddlewareBeforeFirstSnapshot(t *testing.T) {
	sts := newFakeSTS(t)
	sts.feed.setToken("not-yet") // the snapshot is refused: no copy at all
	cfg := sts.config(t)
	v, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	h := v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") }))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+sts.mint(t))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	checkResponse(t, w, http.StatusServiceUnavailable, "", "temporarily_unavailable")
}

func checkResponse(t *testing.T, w *httptest.ResponseRecorder, status int, challenge, code string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d (body %q)", w.Code, status, w.Body.String())
	}
	if got := w.Header().Get("WWW-Authenticate"); got != challenge {
		t.Errorf("WWW-Authenticate %q, want %q", got, challenge)
	}
	if code == "" {
		return
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != code {
		t.Errorf("body %q, want error %q", w.Body.String(), code)
	}
	if strings.Contains(w.Body.String(), "mw-revoked") || strings.Contains(w.Body.String(), "jti=") {
		t.Errorf("body %q reveals the detail", w.Body.String())
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", w.Header().Get("Cache-Control"))
	}
}
