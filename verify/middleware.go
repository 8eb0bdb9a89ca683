package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
)

type tokenKey struct{}

// TokenFromContext returns the Token that Middleware verified for this request.
func TokenFromContext(ctx context.Context) (*Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(*Token)
	return t, ok && t != nil
}

// Middleware lets a request through to next only with a valid, unrevoked bearer
// token (RFC 6750 §2.1, the Authorization header), and puts the verified *Token in
// its context (TokenFromContext). Refusals:
//
//   - no bearer credential: 401, WWW-Authenticate: Bearer (no error code, RFC 6750 §3.1);
//   - a malformed Authorization header (several, or a bearer without a token): 400
//     with error="invalid_request";
//   - a garbled, invalid, expired or revoked token: 401 with error="invalid_token" and a
//     generic description (the detail goes to the debug log);
//   - revocation data stale (ErrStale): 503 with Retry-After, so that the client
//     retries instead of discarding a token that may well be valid.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, status := bearer(r)
		switch status {
		case http.StatusUnauthorized:
			writeAuthError(w, http.StatusUnauthorized, `Bearer`, "", "")
			return
		case http.StatusBadRequest:
			writeAuthError(w, http.StatusBadRequest, `Bearer error="invalid_request"`, "invalid_request", "malformed Authorization header")
			return
		}
		tok, err := v.Verify(r.Context(), raw)
		switch {
		case err == nil:
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok)))
		case errors.Is(err, ErrStale):
			v.log.LogAttrs(r.Context(), slog.LevelWarn, "verify: request refused, revocation data stale", slog.String(logError, err.Error()))
			w.Header().Set("Retry-After", "1")
			writeAuthError(w, http.StatusServiceUnavailable, "", "temporarily_unavailable", "token revocation status unavailable; retry later")
		default:
			if !errors.Is(err, ErrRevoked) { // revocations are logged by Verify
				sum := sha256.Sum256([]byte(raw))
				v.log.LogAttrs(r.Context(), slog.LevelDebug, "verify: request refused",
					slog.String(logTokenSHA256, hex.EncodeToString(sum[:])), slog.String(logError, err.Error()))
			}
			writeAuthError(w, http.StatusUnauthorized,
				`Bearer error="invalid_token", error_description="the access token is not valid"`,
				"invalid_token", "the access token is not valid")
		}
	})
}

// bearer extracts the token of an `Authorization: Bearer` header: status 0 with the
// token, 401 when there is no bearer credential, 400 when the header is malformed.
func bearer(r *http.Request) (string, int) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", http.StatusUnauthorized
	case 1:
	default:
		return "", http.StatusBadRequest
	}
	scheme, tok, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", http.StatusUnauthorized // another scheme: no bearer credential
	}
	tok = strings.Trim(tok, " ")
	if tok == "" {
		return "", http.StatusBadRequest
	}
	return tok, 0 // its syntax is Verify's business: garbage is an invalid_token
}

func writeAuthError(w http.ResponseWriter, status int, challenge, code, desc string) {
	h := w.Header()
	if challenge != "" {
		h.Set("WWW-Authenticate", challenge)
	}
	h.Set("Cache-Control", "no-store")
	if code == "" {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"` + code + `","error_description":"` + desc + `"}` + "\n"))
}
