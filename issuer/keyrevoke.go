package issuer

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// PathAdminKeyRevoke is POST {"kid","reason"}: revoke every token a signing key
// signed (see handleRevokeKey).
const PathAdminKeyRevoke = PathAdmin + "keys/revoke"

// revokeKeyRequest is the body of POST /admin/v1/keys/revoke.
type revokeKeyRequest struct {
	KID    string `json:"kid"`
	Reason string `json:"reason"`
}

// errKeyInUse is the 409 of a revoke naming a key that signs, or will.
func errKeyInUse(desc string) *adminError {
	return &adminError{http.StatusConflict, "key_in_use", desc}
}

// handleRevokeKey is POST /admin/v1/keys/revoke, authorized by the admin action
// rotate_keys: it records a revoke entry with selector kid=KID, which invalidates
// every token signed by that key whatever its iat (package revocation), and audits
// it. A kid this STS signs with, or has staged to sign with, is refused with 409:
// rotate first. A kid this STS never had in key_dir (or a truncated one) is
// refused with 404: it would revoke nothing. Retired keys (still published) and
// removed keys (their kid registered, kids.go) are accepted. key_dir is re-read
// first, so a rotation written to it just before is seen.
func (s *adminService) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	// The action targets no upstream, so the caller is settled before the body is
	// read: an unauthenticated caller learns nothing from how it is judged.
	action := policy.ActionRotateKeys
	caller, ok := s.authorize(w, r, action, nil)
	if !ok {
		return
	}
	var req revokeKeyRequest
	if err := decodeJSONBody(r, &req); err != nil {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	}
	if req.KID == "" || req.Reason == "" {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", "kid and reason are required"})
		return
	}
	sel, err := revocation.NewSelector(revocation.KeyKeyID, req.KID)
	if err != nil {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", "kid: " + err.Error()})
		return
	}
	op := slog.String("op", "revoke_key")
	if e := s.checkRevocableKey(req.KID); e != nil {
		s.auditAdmin(r, action, "refused", caller, op, slog.String("kid", req.KID), slog.String("error", e.desc))
		writeAdminError(w, e)
		return
	}
	now := s.now()
	e := revocation.Entry{
		Kind: revocation.KindRevoke, Selector: sel.String(), Reason: req.Reason,
		Actor: caller.Upstream + ":" + caller.ID, Expires: s.keyRevokeExpiry(req.KID, now),
	}
	s.recordEntry(w, r, action, caller, e, op, slog.String("kid", req.KID))
}

// checkRevocableKey re-reads key_dir and refuses a revoke by kid (nil: none):
// 409 key_in_use when kid is the key this STS signs with, or a key staged to sign
// later (published, of the signing algorithm, not yet activated): a revoke by kid
// invalidates the key's tokens whatever their iat, so on such a key it would
// invalidate every token issued while it lasts; 404 unknown_kid when kid is no
// key this STS has had (kids.go), a revoke that would revoke nothing.
func (s *adminService) checkRevocableKey(kid string) *adminError {
	if err := s.signing.reload(); err != nil {
		s.log.Warn("re-reading the signing keys before a key revoke failed; deciding on the last good keys",
			slog.String("error", err.Error()))
	}
	ring := s.currentRing()
	if ring.active.kid == kid {
		return errKeyInUse(fmt.Sprintf("key %s signs this STS's new tokens: rotate first (stsctl keys rotate --emergency), then revoke it", kid))
	}
	now := s.now()
	for _, k := range ring.keys {
		if k.kid == kid && k.alg == ring.alg && k.activation.After(now) {
			return errKeyInUse(fmt.Sprintf("key %s is staged to sign from %s: remove its file from key_dir first, then revoke it",
				kid, k.activation.UTC().Format(time.RFC3339)))
		}
	}
	if msg := ring.kidProblem(kid); msg != "" {
		return &adminError{http.StatusNotFound, "unknown_kid", msg}
	}
	return nil
}

// keyRevokeExpiry is how long a revoke by kid lasts: until every token the key
// signed has expired (max_ttl from now: it signs no more), and until verifiers can
// no longer accept a token forged with it, whatever its exp: the key leaves the
// JWKS at its scheduled drop and verifiers' cached copies within the JWKS cache
// lifetime. A minute of margin on top.
func (s *adminService) keyRevokeExpiry(kid string, now time.Time) time.Time {
	until := now.Add(s.maxTTL + JWKSCacheLifetime + time.Minute)
	if drop, ok := s.currentRing().dropAt[kid]; ok {
		if t := drop.Add(JWKSCacheLifetime + time.Minute); t.After(until) {
			until = t
		}
	}
	return until
}
