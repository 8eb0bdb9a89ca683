package issuer

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// handleToken is POST /token. It owns the order of the exchange so that no token
// type can skip a step: parse -> authenticate client -> attest subject (and actor)
// -> policy -> revocation -> mint -> audit -> respond.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, &oauthError{Code: codeInvalidRequest, Description: "use POST", Status: http.StatusMethodNotAllowed})
		return
	}
	start := s.now()
	ev := &exchangeEvent{}
	resp, oerr := s.exchange(r, ev)
	if oerr != nil {
		ev.outcome = "refused"
		ev.code = oerr.Code
		writeError(w, oerr)
	} else {
		ev.outcome = "issued"
		writeTokenResponse(w, resp)
	}
	s.metrics.observeExchange(ev.outcome, ev.code, s.now().Sub(start))
	s.traceExchange(r.Context(), ev)
	s.audit(r.Context(), ev)
}

// tokenResponse is the RFC 8693 §2.2.1 success body.
type tokenResponse struct {
	AccessToken     string
	IssuedTokenType string
	ExpiresIn       int64
	Scope           string
}

func (s *Server) exchange(r *http.Request, ev *exchangeEvent) (*tokenResponse, *oauthError) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, badRequest(codeInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	if r.URL.RawQuery != "" {
		return nil, badRequest(codeInvalidRequest, "parameters must be sent in the body, not the URL")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &oauthError{Code: codeInvalidRequest, Description: "the request body is too large", Status: http.StatusRequestEntityTooLarge}
		}
		return nil, badRequest(codeInvalidRequest, "the request body could not be read")
	}
	req, oerr := parseTokenRequest(string(body))
	if oerr != nil {
		ev.reason = oerr.Description
		return nil, oerr
	}
	ev.subjectTokenSHA = tokenHash(req.SubjectToken)
	ev.audiences = slices.Concat(req.Audiences, req.Resources)

	// Client authentication: an X.509-SVID presented over mTLS, a private_key_jwt
	// assertion of a registered client, or none (public clients; policy rules with
	// clients refuse them). There are no client secrets: a client that tries one
	// is told so instead of being silently trusted.
	ctx := r.Context()
	_, _, basic := r.BasicAuth()
	mtls, cerr := s.clientIdentity(ctx, r)
	methods := 0
	for _, used := range []bool{basic, req.ClientSecret, mtls != nil || cerr != nil, req.ClientAssertion != ""} {
		if used {
			methods++
		}
	}
	if methods > 1 {
		ev.reason = "two client authentication methods in one request"
		return nil, badRequest(codeInvalidRequest, "use exactly one client authentication method")
	}
	if cerr != nil {
		ev.reason = "client certificate: " + cerr.Error()
		if errors.Is(cerr, attest.ErrUnavailable) {
			return nil, errUnavailable
		}
		return nil, &oauthError{Code: codeInvalidClient, Description: "the client certificate is not a valid X.509-SVID of a trusted trust domain", Status: http.StatusUnauthorized}
	}
	if basic || req.ClientSecret {
		ev.reason = "client secret sent; clients authenticate with mTLS or private_key_jwt"
		return nil, &oauthError{Code: codeInvalidClient, Description: "client secrets are not supported: use mTLS or private_key_jwt", Status: http.StatusUnauthorized}
	}
	client := mtls
	if mtls != nil {
		ev.clientAuth = "tls_client_auth"
	}
	if req.ClientAssertion != "" {
		c, err := s.authenticateAssertion(ctx, req)
		if err != nil {
			ev.reason = "client authentication: " + err.Error()
			if errors.Is(err, attest.ErrUnavailable) {
				return nil, errUnavailable
			}
			return nil, errClientAuth
		}
		client, ev.clientAuth = c, "private_key_jwt"
	}
	ev.client = client
	if client != nil {
		if oerr := s.limits.allowClient(client.ID); oerr != nil {
			ev.reason = "rate limited: per client"
			return nil, oerr
		}
	}
	sst := s.traceStep(ctx, spanAttestSubject)
	wl, err := s.attestToken(ctx, mtls, req.SubjectToken, req.SubjectTokenType)
	sst.attested(wl, err)
	if err != nil {
		ev.reason = "subject_token: " + err.Error()
		if errors.Is(err, attest.ErrUnavailable) {
			return nil, errUnavailable
		}
		return nil, errSubjectRejected
	}
	ev.workload = wl
	if oerr := s.limits.allowWorkload(wl.Upstream, wl.ID); oerr != nil {
		ev.reason = "rate limited: per workload"
		return nil, oerr
	}
	chain, err := wl.ActChain()
	if err != nil {
		ev.reason = "subject_token: " + err.Error()
		return nil, errSubjectRejected
	}
	var actor *attest.Workload
	depth := 0
	notAfter := wl.Expiry
	if req.ActorToken != "" {
		ast := s.traceStep(ctx, spanAttestActor)
		if actor, err = s.attestToken(ctx, mtls, req.ActorToken, req.ActorTokenType); err != nil {
			ast.attested(nil, err)
			ev.reason = "actor_token: " + err.Error()
			if errors.Is(err, attest.ErrUnavailable) {
				return nil, errUnavailable
			}
			return nil, errActorRejected
		}
		ast.attested(actor, nil)
		ev.actor = actor
		depth = 1 + len(chain)
		if actor.Expiry.Before(notAfter) {
			notAfter = actor.Expiry
		}
	} else if len(chain) > 0 {
		// A delegated token names its actors; whoever presents it again must say who
		// they are, so the chain grows instead of being laundered into direct access.
		ev.reason = "subject_token carries act but no actor_token was sent"
		return nil, badRequest(codeInvalidRequest, "a delegated subject_token must be exchanged with an actor_token")
	}

	now := s.now()
	pst := s.traceStep(ctx, spanPolicy)
	d := s.policy().Decide(policy.Request{
		Workload:            wl,
		Actor:               actor,
		DelegationDepth:     depth,
		Audiences:           req.Audiences,
		Resources:           req.Resources,
		Scopes:              req.Scopes,
		RequestedTokenType:  req.RequestedTokenType,
		ClientID:            clientID(client, req.ClientID),
		ClientAuthenticated: client != nil,
		SenderConstrained:   mtls != nil,
		Now:                 now,
	})
	ev.rule, ev.reason, ev.audited = d.Rule, d.Reason, d.Audited
	pst.decided(d.Rule, d.Outcome)
	s.metrics.decisions.WithLabelValues(d.Rule, d.Outcome.String()).Inc()
	for _, a := range d.Audited {
		s.metrics.audited.WithLabelValues(a.Rule, a.Would).Inc()
	}
	switch d.Outcome {
	case policy.Allow:
	case policy.DenyTarget:
		return nil, errTargetRefused
	case policy.DenyScope:
		return nil, errScopeRefused
	case policy.DenyActor:
		return nil, errActorRejected
	case policy.DenyClient:
		if client == nil {
			return nil, errClientRequired
		}
		return nil, errSubjectRejected
	case policy.DenyRequest:
		s.log.ErrorContext(ctx, "policy refused an inconsistent request", slog.String("reason", d.Reason))
		return nil, errServer
	default: // no rule, explicit deny, sender constraint: indistinguishable from a bad token
		return nil, errSubjectRejected
	}

	// A token of a one_time upstream is good for one exchange that policy allows.
	if err := s.claimOneTime(ctx, wl, req.SubjectTokenType); err != nil {
		ev.reason = "subject_token: " + err.Error()
		if errors.Is(err, attest.ErrUnavailable) {
			return nil, errUnavailable
		}
		return nil, errSubjectRejected
	}
	if actor != nil {
		if err := s.claimOneTime(ctx, actor, req.ActorTokenType); err != nil {
			ev.reason = "actor_token: " + err.Error()
			if errors.Is(err, attest.ErrUnavailable) {
				return nil, errUnavailable
			}
			return nil, errActorRejected
		}
	}

	// One store round trip: blocks for this workload, the store's clock for iat (so
	// that a concurrent revoke is ordered against this token), and the binding last
	// recorded for this instance.
	facts := revocation.Facts{
		Subject:     wl.ID,
		Upstream:    wl.Upstream,
		TrustDomain: wl.Attributes["trust_domain"],
		ClientID:    clientID(client, wl.ID),
		Audiences:   d.Audiences,
		Attributes:  wl.Attributes,
	}
	b, bound := s.bindings[wl.Upstream]
	instance := ""
	if bound {
		facts.Binding = revocation.Fingerprint(wl.Attributes, b.names)
		instance = instanceKey(wl, b)
	}
	rst := s.traceStep(ctx, spanAdmit)
	adm, err := s.store.Admit(ctx, &facts, instance)
	rst.admitted(err)
	if err != nil {
		if errors.Is(err, revocation.ErrBlocked) {
			ev.reason = "revocation: " + err.Error()
			return nil, errSubjectRejected
		}
		ev.reason = "revocation store: " + err.Error()
		s.log.ErrorContext(ctx, "revocation store unavailable; refusing to issue", slog.String("error", err.Error()))
		return nil, errUnavailable
	}
	if bound && adm.Binding != facts.Binding {
		// The instance changed (or is new): revoke tokens bound to its old attributes
		// before this one is minted under the new ones.
		if _, err := s.bind(ctx, b, wl, "exchange"); err != nil {
			ev.reason = "revocation store: " + err.Error()
			return nil, errUnavailable
		}
	}

	iat := now.Truncate(time.Second)
	if t := adm.IssuedAt.Truncate(time.Second); !t.IsZero() && t.Before(iat) {
		iat = t
	}
	exp, ok := s.expiry(iat, d.MaxTTL, notAfter)
	if !ok {
		ev.reason = "subject or actor token expires within a second"
		return nil, errSubjectRejected
	}
	c := &claims{
		Subject:    wl.ID,
		Audience:   d.Audiences,
		IssuedAt:   iat,
		Expiry:     exp,
		ID:         newTokenID(),
		ClientID:   wl.ID,
		Scopes:     d.Scopes,
		Upstream:   wl.Upstream,
		Attributes: copyAttributes(wl.Attributes, d.CopyAttributes),
		Binding:    facts.Binding,
	}
	if actor != nil {
		c.ClientID = actor.ID
		c.Act = append([]attest.Actor{{Subject: actor.ID, Issuer: actor.Issuer}}, chain...)
	}
	if client != nil {
		c.ClientID = client.ID // authenticated: it outranks what the tokens say
	}
	if d.RequireSenderConstraint {
		// Policy allows this only for a request over mTLS (SenderConstrained), so
		// the client certificate is there to bind to (RFC 8705 §3.1).
		c.CertThumbprint = certThumbprint(r.TLS.PeerCertificates[0])
	}
	mst := s.traceStep(ctx, spanMint)
	tok, err := s.minter.mint(c)
	mst.minted(c.ID, err)
	if err != nil {
		ev.reason = "mint: " + err.Error()
		s.log.ErrorContext(ctx, "signing failed", slog.String("error", err.Error()))
		return nil, errUnavailable
	}
	ev.jti, ev.expiry, ev.scopes = c.ID, exp, d.Scopes
	return &tokenResponse{
		AccessToken:     tok,
		IssuedTokenType: req.RequestedTokenType,
		ExpiresIn:       exp.Unix() - iat.Unix(),
		Scope:           strings.Join(d.Scopes, " "),
	}, nil
}

// expiry is min(default TTL, rule max, config max) from iat, never after the subject
// token's own exp. ok is false when less than a second would remain.
func (s *Server) expiry(iat time.Time, ruleMax time.Duration, subjectExp time.Time) (time.Time, bool) {
	ttl := s.defaultTTL
	if ruleMax > 0 && ruleMax < ttl {
		ttl = ruleMax
	}
	if ttl > s.maxTTL {
		ttl = s.maxTTL
	}
	exp := iat.Add(ttl)
	if limit := subjectExp.Truncate(time.Second); exp.After(limit) {
		exp = limit
	}
	return exp, exp.Sub(iat) >= time.Second
}

// writeTokenResponse writes the success body, marshalled by hand.
func writeTokenResponse(w http.ResponseWriter, t *tokenResponse) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	buf := make([]byte, 0, len(t.AccessToken)+192)
	buf = append(buf, `{"access_token":`...)
	buf = appendJSONString(buf, t.AccessToken)
	buf = append(buf, `,"issued_token_type":`...)
	buf = appendJSONString(buf, t.IssuedTokenType)
	buf = append(buf, `,"token_type":"Bearer","expires_in":`...)
	buf = strconv.AppendInt(buf, t.ExpiresIn, 10)
	if t.Scope != "" {
		buf = append(buf, `,"scope":`...)
		buf = appendJSONString(buf, t.Scope)
	}
	buf = append(buf, '}', '\n')
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// exchangeEvent is the audit record of one exchange. It never holds a token, only
// its SHA-256.
type exchangeEvent struct {
	outcome         string
	code            string
	reason          string
	rule            string
	workload        *attest.Workload
	audiences       []string
	scopes          []string
	jti             string
	expiry          time.Time
	actor           *attest.Workload
	client          *attest.Workload
	clientAuth      string // tls_client_auth or private_key_jwt
	audited         []policy.AuditHit
	subjectTokenSHA string
}

// audit writes one structured event per exchange decision to the audit log.
func (s *Server) audit(ctx context.Context, ev *exchangeEvent) {
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("event", "exchange"), slog.String("outcome", ev.outcome))
	if ev.code != "" {
		attrs = append(attrs, slog.String("error", ev.code))
	}
	if ev.workload != nil {
		attrs = append(attrs, slog.String("upstream", ev.workload.Upstream), slog.String("sub", ev.workload.ID))
	}
	if ev.actor != nil {
		attrs = append(attrs, slog.String("actor_upstream", ev.actor.Upstream), slog.String("actor", ev.actor.ID))
	}
	if ev.client != nil {
		attrs = append(attrs, slog.String("client", ev.client.ID), slog.String("client_auth", ev.clientAuth))
	}
	if len(ev.audiences) > 0 {
		attrs = append(attrs, slog.Any("aud", jsonStrings(ev.audiences)))
	}
	if ev.rule != "" {
		attrs = append(attrs, slog.String("rule", ev.rule))
	}
	if ev.reason != "" {
		attrs = append(attrs, slog.String("reason", ev.reason))
	}
	if ev.jti != "" {
		attrs = append(attrs, slog.String("jti", ev.jti), slog.Int64("exp", ev.expiry.Unix()))
		if len(ev.scopes) > 0 {
			attrs = append(attrs, slog.String("scope", strings.Join(ev.scopes, " ")))
		}
	}
	for _, a := range ev.audited {
		attrs = append(attrs, slog.Group("audit_rule", slog.String("rule", a.Rule), slog.String("would", a.Would)))
	}
	if ev.subjectTokenSHA != "" {
		attrs = append(attrs, slog.String("subject_token_sha256", ev.subjectTokenSHA))
	}
	level := slog.LevelInfo
	if ev.code == codeTemporarilyUnavailable || ev.code == codeServerError {
		level = slog.LevelWarn
	}
	s.auditLog.LogAttrs(ctx, level, "exchange", attrs...)
}

// copyAttributes returns the workload attributes the deciding rule asked to copy
// into the token (only those the workload has).
func copyAttributes(have map[string]string, names []string) map[string]string {
	if len(names) == 0 || len(have) == 0 {
		return nil
	}
	out := make(map[string]string, len(names))
	for _, n := range names {
		if v, ok := have[n]; ok {
			out[n] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// TypeX509SVID is the subject_token_type (and actor_token_type) for an identity
// presented as the mTLS client certificate: the token's value is the SPIFFE ID the
// client claims, which must be the X.509-SVID it authenticated with.
const TypeX509SVID = "urn:safeconduct:params:oauth:token-type:x509-svid"

// attestToken attests a subject or actor token; an X.509-SVID "token" names the
// verified mTLS client identity.
func (s *Server) attestToken(ctx context.Context, client *attest.Workload, raw, tokenType string) (*attest.Workload, error) {
	if tokenType != TypeX509SVID {
		return s.attester.Attest(ctx, raw, tokenType)
	}
	if client == nil {
		return nil, fmt.Errorf("%w: %s needs a client certificate (mTLS)", attest.ErrInvalid, TypeX509SVID)
	}
	if raw != client.ID {
		return nil, fmt.Errorf("%w: token names %.256q but the client certificate is %q", attest.ErrInvalid, raw, client.ID)
	}
	return client, nil
}

// clientID is the client_id policy sees: the authenticated mTLS identity, else
// what a public client sent (unauthenticated).
func clientID(client *attest.Workload, sent string) string {
	if client != nil {
		return client.ID
	}
	return sent
}

// connIdentity memoizes a connection's verified client certificate: verified once
// per TLS connection, not per request.
type connIdentity struct {
	once sync.Once
	wl   *attest.Workload
	err  error
	// raw is the accepted connection, for its socket's queue age (overload.go).
	raw syscall.Conn
}

type connKey struct{}

// clientIdentity returns the verified X.509-SVID identity of the client, nil when
// it sent no certificate, or an error when the certificate is not a valid SVID.
func (s *Server) clientIdentity(ctx context.Context, r *http.Request) (*attest.Workload, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, nil
	}
	verify := func() (*attest.Workload, error) {
		return s.attester.AttestX509(ctx, r.TLS.PeerCertificates)
	}
	ci, _ := ctx.Value(connKey{}).(*connIdentity)
	if ci == nil {
		return verify()
	}
	ci.once.Do(func() { ci.wl, ci.err = verify() })
	if ci.err == nil && !s.now().Before(ci.wl.Expiry) {
		// A keep-alive connection may outlive the certificate it was opened with.
		return nil, fmt.Errorf("%w: client certificate expired during the connection", attest.ErrInvalid)
	}
	return ci.wl, ci.err
}

// certThumbprint is the RFC 8705 x5t#S256 of a certificate: base64url SHA-256 of DER.
func certThumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// jsonStrings is a string list pre-encoded as a JSON array, so the audit handler
// copies it instead of reflecting over a slice on every exchange.
func jsonStrings(v []string) json.RawMessage {
	buf := make([]byte, 0, 64)
	buf = append(buf, '[')
	for i, s := range v {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, s)
	}
	return append(buf, ']')
}
