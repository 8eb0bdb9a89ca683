package issuer

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// Introspection (RFC 7662) has two kinds of caller:
//
//   - resource servers: registered clients with introspect_audiences that
//     authenticate as clients (private_key_jwt in the body, or mTLS with their
//     X.509-SVID); each may introspect the tokens whose aud holds one of its
//     audiences, and any other token is {"active": false} to it;
//   - admins: a bearer token or an mTLS identity that an admin rule grants the
//     introspect action, for any token of this STS.
//
// Every token that is not active for the caller (malformed, forged, another
// issuer, expired, revoked, blocked, another audience) is {"active": false}
// and nothing else. The admin limits (per IP, in flight, overload) run before
// any of this (server.go), so a flood of forged credentials costs no crypto
// beyond them.

// errNotResourceServer answers a client that authenticated but may introspect
// nothing: it has no introspect_audiences.
var errNotResourceServer = &oauthError{Code: "unauthorized_client", Description: "this client is not registered as a resource server (introspect_audiences)", Status: http.StatusForbidden}

// inactive is the answer for any token that is not active for the caller.
var inactive = map[string]bool{"active": false}

// handleIntrospect is POST /introspect.
func (s *adminService) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	if s.introspectAsClient(w, r) {
		return
	}
	if _, ok := s.authorize(w, r, policy.ActionIntrospect, nil); !ok {
		return
	}
	body, err := readAllBody(r)
	if err != nil {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", "the body could not be read"})
		return
	}
	tok, err := formValue(string(body), "token")
	if err != nil {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	}
	s.answerIntrospection(w, r, tok, nil)
}

// introspectAsClient answers the request when it comes from a client: a form
// with a client assertion, a client secret (refused), or an mTLS identity
// registered as a resource server. It returns false, having written nothing,
// for every other request (a bearer credential, an admin's mTLS identity, none):
// the admin path then answers it as before.
func (s *adminService) introspectAsClient(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	if scheme, _, _ := strings.Cut(auth, " "); strings.EqualFold(scheme, "Basic") {
		s.auditAdmin(r, policy.ActionIntrospect, "unauthenticated", nil, slog.String("reason", "client secret sent"))
		writeError(w, errClientSecret)
		return true
	}
	if auth != "" || !isForm(r) {
		return false
	}
	body, err := rereadableBody(r)
	if err != nil {
		return false
	}
	p, oerr := parseTokenParams(string(body))
	if oerr != nil {
		// Unparsed: nothing says a client is calling; the admin path
		// authenticates the caller before it judges the body.
		return false
	}
	ctx := r.Context()
	mtls, cerr := s.clientIdentity(ctx, r)
	var client *attest.Workload
	switch {
	case p.ClientSecret:
		s.auditAdmin(r, policy.ActionIntrospect, "unauthenticated", nil, slog.String("reason", "client secret sent"))
		writeError(w, errClientSecret)
		return true
	case p.ClientAssertion != "" && (mtls != nil || cerr != nil):
		writeError(w, badRequest(codeInvalidRequest, "use exactly one client authentication method"))
		return true
	case p.ClientAssertion != "":
		c, err := s.verifyAssertion(ctx, p.ClientID, p.ClientAssertionType, p.ClientAssertion)
		if err != nil {
			s.auditAdmin(r, policy.ActionIntrospect, "unauthenticated", nil, slog.String("client_auth", "private_key_jwt"), slog.String("reason", err.Error()))
			if errors.Is(err, attest.ErrUnavailable) {
				writeError(w, errUnavailable)
			} else {
				writeError(w, errClientAuth)
			}
			return true
		}
		client = c
	case cerr == nil && mtls != nil && s.resourceServers[mtls.ID] != nil:
		client = mtls
	default:
		return false
	}
	auds := s.resourceServers[client.ID]
	if auds == nil {
		s.auditAdmin(r, policy.ActionIntrospect, "denied", client, slog.String("reason", "the client has no introspect_audiences"))
		writeError(w, errNotResourceServer)
		return true
	}
	if p.Token == "" {
		writeError(w, badRequest(codeInvalidRequest, "the token parameter is required"))
		return true
	}
	s.answerIntrospection(w, r, p.Token, func(claims map[string]any) bool {
		if hasAudience(claims, auds) {
			return true
		}
		// A resource server that is also an admin (by its mTLS identity) keeps
		// what its admin rules grant.
		return client == mtls && s.policy().DecideAdmin(policy.AdminRequest{Caller: client, Action: policy.ActionIntrospect, Now: s.now()}).Allowed()
	})
	return true
}

// hasAudience reports whether the token's aud (a string or an array) holds
// one of auds.
func hasAudience(claims map[string]any, auds []string) bool {
	switch aud := claims["aud"].(type) {
	case string:
		return slices.Contains(auds, aud)
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok && slices.Contains(auds, s) {
				return true
			}
		}
	}
	return false
}

// answerIntrospection answers for tok: active with its claims when this STS
// minted it, it verifies, has not expired, is neither revoked nor under a block,
// and may (nil: any token) lets the caller see it; else {"active": false}.
func (s *adminService) answerIntrospection(w http.ResponseWriter, r *http.Request, tok string, may func(map[string]any) bool) {
	claims, active, err := s.activeClaims(r.Context(), tok)
	switch {
	case err != nil:
		writeAdminError(w, errStoreDown)
	case !active || (may != nil && !may(claims)):
		writeJSON(w, http.StatusOK, inactive)
	default:
		claims["active"] = true
		claims["token_type"] = "Bearer"
		writeJSON(w, http.StatusOK, claims)
	}
}

// activeClaims verifies tok as a token of this STS and checks the revocation
// store: the claims and true when it is active; false when it is not; an error
// only when the store cannot answer.
func (s *core) activeClaims(ctx context.Context, tok string) (map[string]any, bool, error) {
	claims, kid, err := s.verifyOwn(tok)
	if err != nil {
		return nil, false, nil
	}
	f := revocation.FactsFromClaims(claims)
	f.KeyID = kid
	e, err := s.store.Revoked(ctx, &f)
	if err != nil {
		return nil, false, err
	}
	if e != nil {
		return nil, false, nil
	}
	// A workload under an active block has no valid token here either: the block
	// stops issuance, and introspection treats its tokens as inactive while it lasts.
	if _, err := s.store.Admit(ctx, &f, ""); err != nil {
		if errors.Is(err, revocation.ErrBlocked) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return claims, true, nil
}

// rereadableBody reads r's body and leaves it readable again for the handler
// that answers (the admin limits have usually read it ahead already).
func rereadableBody(r *http.Request) ([]byte, error) {
	if b, ok := r.Body.(*bufferedBody); ok {
		return b.data, b.err
	}
	data, err := readAllBody(r)
	b := &bufferedBody{data: data, err: err}
	b.rd.Reset(data)
	r.Body = b
	return data, err
}
