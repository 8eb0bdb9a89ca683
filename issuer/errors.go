package issuer

import (
	"net/http"
	"strconv"
)

// OAuth error codes (RFC 6749 §5.2, RFC 8693 §2.2.2).
const (
	codeInvalidRequest         = "invalid_request"
	codeInvalidClient          = "invalid_client"
	codeInvalidScope           = "invalid_scope"
	codeInvalidTarget          = "invalid_target"
	codeUnsupportedGrantType   = "unsupported_grant_type"
	codeServerError            = "server_error"
	codeTemporarilyUnavailable = "temporarily_unavailable"
)

// oauthError is a protocol error as the client sees it: a code, a description that
// helps an honest caller and tells an attacker nothing, and the HTTP status. Details
// go to the log and audit event, never here.
type oauthError struct {
	Code        string
	Description string
	Status      int
	// RetryAfter, when positive, is sent as Retry-After seconds.
	RetryAfter int
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func badRequest(code, desc string) *oauthError {
	return &oauthError{Code: code, Description: desc, Status: http.StatusBadRequest}
}

// Frequent refusals. The subject-token refusal is the same whether the token was
// malformed, forged, expired, from an unknown issuer or denied by policy, so that a
// caller cannot probe which.
var (
	errSubjectRejected = badRequest(codeInvalidRequest, "subject_token is invalid or not accepted")
	errActorRejected   = badRequest(codeInvalidRequest, "actor_token is invalid or not accepted")
	errTargetRefused   = badRequest(codeInvalidTarget, "a requested audience or resource is not permitted")
	errScopeRefused    = badRequest(codeInvalidScope, "a requested scope is not permitted")
	errServer          = &oauthError{Code: codeServerError, Description: "internal error", Status: http.StatusInternalServerError}
	errClientRequired  = &oauthError{Code: codeInvalidClient, Description: "client authentication is required for this request (mTLS or private_key_jwt)", Status: http.StatusUnauthorized}
	errUnavailable     = &oauthError{Code: codeTemporarilyUnavailable, Description: "the service cannot issue tokens right now; retry later", Status: http.StatusServiceUnavailable, RetryAfter: 1}
)

// writeError writes e as an RFC 6749 §5.2 JSON body.
func writeError(w http.ResponseWriter, e *oauthError) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer error="invalid_client"`)
	}
	buf := make([]byte, 0, 128)
	buf = append(buf, `{"error":`...)
	buf = appendJSONString(buf, e.Code)
	if e.Description != "" {
		buf = append(buf, `,"error_description":`...)
		buf = appendJSONString(buf, e.Description)
	}
	buf = append(buf, '}', '\n')
	w.WriteHeader(e.Status)
	_, _ = w.Write(buf)
}
