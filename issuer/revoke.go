package issuer

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/revocation"
)

// PathRevoke is the RFC 7009 token revocation endpoint.
const PathRevoke = "/revoke"

// eventRevokeToken is the audit event of a revocation request.
const eventRevokeToken = "revoke_token"

// Who may revoke a token at /revoke (RFC 7009):
//
//   - an authenticated client (private_key_jwt, or mTLS with an X.509-SVID) the
//     token was issued to: its client_id is the client, or its upstream and sub
//     are the mTLS workload's (whatever SVID it holds now), or it is bound
//     (cnf.x5t#S256) to the certificate presented; another client's token is
//     refused (unauthorized_client);
//   - without client authentication, whoever presents the token: possession of
//     a bearer token is the proof (it could use the token anyway). A token bound
//     to a certificate (cnf) is not a bearer token: only its workload (mTLS)
//     revokes it.
//
// The token is revoked by its jti through the revocation store (a revoke entry
// "jti=..." until the token expires), so introspection, the feed, `verify` and
// every replica see it. Tokens this STS did not mint, expired ones and revoked
// ones answer 200 and change nothing (RFC 7009 §2.2). The admin limits run
// before it (server.go).

// errNotYourToken refuses an authenticated client's request for a token issued
// to another client (RFC 7009 §2.1).
var errNotYourToken = &oauthError{Code: "unauthorized_client", Description: "the token was not issued to this client", Status: http.StatusBadRequest}

// errBoundToken refuses the revocation of a certificate-bound token without its
// certificate.
var errBoundToken = &oauthError{Code: codeInvalidClient, Description: "a certificate-bound token is revoked over mTLS with its certificate", Status: http.StatusUnauthorized}

// errRevokeUnavailable is the 503 of a revocation that could not be recorded.
var errRevokeUnavailable = &oauthError{Code: codeTemporarilyUnavailable, Description: "the revocation could not be recorded; retry later", Status: http.StatusServiceUnavailable, RetryAfter: 1}

// handleRevoke is POST /revoke.
func (s *adminService) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	audit := func(outcome string, caller *attest.Workload, attrs ...slog.Attr) {
		s.auditAdmin(r, eventRevokeToken, outcome, caller, attrs...)
	}
	if !isForm(r) {
		writeError(w, badRequest(codeInvalidRequest, "the body must be application/x-www-form-urlencoded"))
		return
	}
	if r.URL.RawQuery != "" {
		writeError(w, badRequest(codeInvalidRequest, "parameters must be sent in the body, not the URL"))
		return
	}
	body, err := readAllBody(r)
	if err != nil {
		writeError(w, badRequest(codeInvalidRequest, "the request body could not be read"))
		return
	}
	p, oerr := parseTokenParams(string(body))
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	// Client authentication first: none, mTLS or private_key_jwt.
	mtls, cerr := s.clientIdentity(ctx, r)
	_, _, basic := r.BasicAuth()
	switch {
	case basic || p.ClientSecret:
		audit("unauthenticated", nil, slog.String("reason", "client secret sent"))
		writeError(w, errClientSecret)
		return
	case r.Header.Get("Authorization") != "":
		writeError(w, &oauthError{Code: codeInvalidClient, Description: "the Authorization header is not used here: authenticate with mTLS or private_key_jwt, or present the token alone", Status: http.StatusUnauthorized})
		return
	case p.ClientAssertion != "" && (mtls != nil || cerr != nil):
		writeError(w, badRequest(codeInvalidRequest, "use exactly one client authentication method"))
		return
	case cerr != nil:
		audit("unauthenticated", nil, slog.String("client_auth", "tls_client_auth"), slog.String("reason", cerr.Error()))
		writeError(w, mapErr(cerr, errClientCertificate, "").oauth)
		return
	}
	caller, method := mtls, "tls_client_auth"
	if p.ClientAssertion != "" {
		c, err := s.verifyAssertion(ctx, p.ClientID, p.ClientAssertionType, p.ClientAssertion)
		if err != nil {
			audit("unauthenticated", nil, slog.String("client_auth", "private_key_jwt"), slog.String("reason", err.Error()))
			writeError(w, mapErr(err, errClientAuth, "").oauth)
			return
		}
		caller, method = c, "private_key_jwt"
	}
	if caller == nil {
		method = "none"
	}
	switch p.TokenTypeHint {
	case "", "access_token":
	default:
		writeError(w, badRequest("unsupported_token_type", "only access tokens are issued and revoked here"))
		return
	}
	if p.Token == "" {
		writeError(w, badRequest(codeInvalidRequest, "the token parameter is required"))
		return
	}
	if s.auditRefuses() {
		audit("refused", caller, slog.String("error", "the audit log cannot be written"))
		writeError(w, errRevokeUnavailable)
		return
	}
	sha := tokenHash(p.Token)
	claims, kid, err := s.verifyOwn(p.Token)
	if err != nil {
		// Not a token of this STS, or expired: nothing to revoke (RFC 7009 §2.2).
		audit("ignored", caller, slog.String("client_auth", method), slog.String("token_sha256", sha), slog.String("reason", "not a valid token of this STS: "+err.Error()))
		revoked(w)
		return
	}
	f := revocation.FactsFromClaims(claims)
	f.KeyID = kid
	if !s.holds(r, caller, claims, &f) {
		bound := certBound(claims) != ""
		audit("denied", caller, slog.String("client_auth", method), slog.String("jti", f.JTI), slog.String("reason", "the token was not issued to the caller"))
		if caller == nil && bound {
			writeError(w, errBoundToken)
		} else {
			writeError(w, errNotYourToken)
		}
		return
	}
	e, err := s.store.Revoked(ctx, &f)
	switch {
	case err != nil:
		audit("error", caller, slog.String("client_auth", method), slog.String("jti", f.JTI), slog.String("error", err.Error()))
		writeError(w, errRevokeUnavailable)
		return
	case e != nil:
		audit("already_revoked", caller, slog.String("client_auth", method), slog.String("jti", f.JTI), slog.String("id", e.ID))
		revoked(w)
		return
	}
	sel, err := revocation.ParseSelector(revocation.KeyJTI + "=" + f.JTI)
	if err != nil || f.JTI == "" {
		audit("error", caller, slog.String("client_auth", method), slog.String("token_sha256", sha), slog.String("error", "the token's jti is not a selector value"))
		writeError(w, errServer)
		return
	}
	exp, _ := claims["exp"].(float64)
	entry := revocation.Entry{
		Kind:     revocation.KindRevoke,
		Selector: sel.String(),
		Reason:   "revoked by its holder (RFC 7009)",
		Actor:    revokeActor(caller, &f),
		// The token is dead after its exp: the entry outlives it by the skew
		// verifiers allow.
		Expires: time.Unix(int64(exp), 0).Add(time.Minute),
	}
	created, err := s.store.Create(ctx, entry)
	if err != nil {
		audit("error", caller, slog.String("client_auth", method), slog.String("jti", f.JTI), slog.String("error", err.Error()))
		writeError(w, errRevokeUnavailable)
		return
	}
	s.metrics.revocations.WithLabelValues(string(created.Kind)).Inc()
	if err := s.auditChange(r, eventRevokeToken, caller, slog.String("client_auth", method), slog.String("id", created.ID),
		slog.String("selector", created.Selector), slog.String("upstream", f.Upstream), slog.String("sub", f.Subject),
		slog.Time("expires", created.Expires)); err != nil {
		// Revoked, but the audit trail lacks it: say so (503), as the admin API does.
		writeError(w, &oauthError{Code: codeTemporarilyUnavailable, Description: "the token was revoked, but its audit event could not be written", Status: http.StatusServiceUnavailable})
		return
	}
	revoked(w)
}

// revoked is the RFC 7009 §2.2 success answer: 200, no content to read.
func revoked(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(http.StatusOK)
}

// holds reports whether caller may revoke the token with these claims (see the
// rules above).
func (s *adminService) holds(r *http.Request, caller *attest.Workload, claims map[string]any, f *revocation.Facts) bool {
	if caller == nil {
		// Presenting a bearer token is the proof; a certificate-bound one needs
		// its workload's mTLS.
		return certBound(claims) == ""
	}
	if bound := certBound(claims); bound != "" && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 &&
		certThumbprint(r.TLS.PeerCertificates[0]) == bound {
		return true
	}
	if f.ClientID == caller.ID {
		return true
	}
	return caller.Upstream != "client" && f.Upstream == caller.Upstream && f.Subject == caller.ID
}

// certBound is the token's cnf.x5t#S256, "" when it is not certificate-bound.
func certBound(claims map[string]any) string {
	cnf, _ := claims["cnf"].(map[string]any)
	t, _ := cnf["x5t#S256"].(string)
	return t
}

// revokeActor names who revoked a token in its entry.
func revokeActor(caller *attest.Workload, f *revocation.Facts) string {
	if caller != nil {
		return caller.Upstream + ":" + caller.ID
	}
	return "holder:" + f.Upstream + ":" + f.Subject
}
