package issuer

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/revocation"
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
	errClientSecret    = &oauthError{Code: codeInvalidClient, Description: "client secrets are not supported: use mTLS or private_key_jwt", Status: http.StatusUnauthorized}
	// errClientCertificate is the answer to every client certificate that is not
	// a valid X.509-SVID of a trusted trust domain.
	errClientCertificate = &oauthError{Code: codeInvalidClient, Description: "the client certificate is not a valid X.509-SVID of a trusted trust domain", Status: http.StatusUnauthorized}
)

// refusal is why an exchange was refused: the OAuth error the client is told
// and the cause, the detail the audit event records as its reason. Many causes
// share one OAuth error, so that a caller cannot tell them apart.
type refusal struct {
	oauth *oauthError
	cause string
	// blockEntry is the id of the block that refused the exchange, if one did.
	blockEntry string
}

func refuse(oerr *oauthError, cause string) *refusal {
	return &refusal{oauth: oerr, cause: cause}
}

// mapErr is the one place where the error of a failed step becomes a refusal:
// a block of the revocation store refuses the subject (as a bad subject token
// would be), an unavailable upstream, key source or store (attest.ErrUnavailable)
// is temporarily_unavailable, and any other error is fallback. The cause is
// prefix and the error; a block's is "revocation: " and the block.
func mapErr(err error, fallback *oauthError, prefix string) *refusal {
	switch {
	case errors.Is(err, revocation.ErrBlocked):
		// A BlockedError already reads "revocation: issuance blocked by entry ...".
		cause := err.Error()
		if !strings.HasPrefix(cause, "revocation: ") {
			cause = "revocation: " + cause
		}
		ref := refuse(errSubjectRejected, cause)
		if be, ok := errors.AsType[*revocation.BlockedError](err); ok {
			ref.blockEntry = be.Entry.ID
		}
		return ref
	case errors.Is(err, attest.ErrUnavailable):
		return refuse(errUnavailable, prefix+err.Error())
	default:
		return refuse(fallback, prefix+err.Error())
	}
}

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
