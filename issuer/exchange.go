package issuer

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// exchangeState is what the phases of one exchange learn and hand on, in the
// order they learn it. A phase reads what earlier phases set and nothing later.
type exchangeState struct {
	r *http.Request

	// parseRequest
	req *tokenRequest

	// authenticateClient: mtls is the verified client certificate (nil without
	// one); client the authenticated client (nil for a public client).
	mtls       *attest.Workload
	client     *attest.Workload
	clientAuth string // tls_client_auth or private_key_jwt

	// attestSubject and attestActor. notAfter is the earlier expiry of the
	// subject and actor tokens; depth the delegation depth policy sees.
	workload *attest.Workload
	chain    []attest.Actor
	actor    *attest.Workload
	depth    int
	notAfter time.Time
	// condition is the upstream condition that refused the subject or actor
	// token, for the audit event.
	condition *attest.ConditionError

	// decide: now is the clock the token's iat starts from.
	now      time.Time
	decision policy.Decision

	// admit: the facts the store admitted, and its clock for iat.
	facts    *revocation.Facts
	storeIAT time.Time

	// mint
	claims   claims
	response tokenResponse
}

// exchange runs the phases of every exchange, whatever its token types, in
// their one order until one refuses. The variation (X.509-SVID subjects,
// delegation, one_time upstreams, bound upstreams, sender constraint) is inside
// the phases; none is skipped. (Called directly rather than from a table of
// phases: x then stays on the stack.)
func (s *tokenService) exchange(ctx context.Context, x *exchangeState) *refusal {
	if ref := s.parseRequest(ctx, x); ref != nil {
		return ref
	}
	if ref := s.authenticateClient(ctx, x); ref != nil {
		return ref
	}
	if ref := s.attestSubject(ctx, x); ref != nil {
		return ref
	}
	if ref := s.attestActor(ctx, x); ref != nil {
		return ref
	}
	if ref := s.decide(ctx, x); ref != nil {
		return ref
	}
	if ref := s.admit(ctx, x); ref != nil {
		return ref
	}
	return s.mint(ctx, x)
}

// parseRequest reads and parses the form body. Refusals before the form is
// parsed have no cause beyond what the client is told, and none in the audit
// event.
func (s *tokenService) parseRequest(_ context.Context, x *exchangeState) *refusal {
	r := x.r
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return refuse(badRequest(codeInvalidRequest, "the body must be application/x-www-form-urlencoded"), "")
	}
	if r.URL.RawQuery != "" {
		return refuse(badRequest(codeInvalidRequest, "parameters must be sent in the body, not the URL"), "")
	}
	body, err := readAllBody(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return refuse(&oauthError{Code: codeInvalidRequest, Description: "the request body is too large", Status: http.StatusRequestEntityTooLarge}, "")
		}
		return refuse(badRequest(codeInvalidRequest, "the request body could not be read"), "")
	}
	req, oerr := parseTokenRequest(string(body))
	if oerr != nil {
		return refuse(oerr, oerr.Description)
	}
	x.req = req
	return nil
}

// authenticateClient: an X.509-SVID presented over mTLS, a private_key_jwt
// assertion of a registered client, or none (public clients; policy rules with
// clients refuse them). There are no client secrets: a client that tries one is
// told so instead of being silently trusted. An authenticated client is then
// held to its rate limit.
func (s *tokenService) authenticateClient(ctx context.Context, x *exchangeState) *refusal {
	_, _, basic := x.r.BasicAuth()
	mtls, cerr := s.clientIdentity(ctx, x.r)
	if authMethods(basic, x.req.ClientSecret, mtls != nil || cerr != nil, x.req.ClientAssertion != "") > 1 {
		return refuse(badRequest(codeInvalidRequest, "use exactly one client authentication method"), "two client authentication methods in one request")
	}
	if cerr != nil {
		return mapErr(cerr, errClientCertificate, "client certificate: ")
	}
	if basic || x.req.ClientSecret {
		return refuse(errClientSecret, "client secret sent; clients authenticate with mTLS or private_key_jwt")
	}
	x.mtls, x.client = mtls, mtls
	if mtls != nil {
		x.clientAuth = "tls_client_auth"
	}
	if x.req.ClientAssertion != "" {
		c, err := s.authenticateAssertion(ctx, x.req)
		if err != nil {
			return mapErr(err, errClientAuth, "client authentication: ")
		}
		x.client, x.clientAuth = c, "private_key_jwt"
	}
	if x.client != nil {
		if oerr := s.limits.allowClient(x.client.ID); oerr != nil {
			return refuse(oerr, "rate limited: per client")
		}
	}
	return nil
}

// authMethods counts the client authentication methods a request used.
func authMethods(used ...bool) int {
	n := 0
	for _, u := range used {
		if u {
			n++
		}
	}
	return n
}

// attestSubject verifies the subject token, holds the workload to its rate limit
// and reads the actors a delegated token names.
func (s *tokenService) attestSubject(ctx context.Context, x *exchangeState) *refusal {
	st := s.tracing.step(ctx, spanAttestSubject)
	wl, err := s.attestToken(ctx, x.mtls, x.req.SubjectToken, x.req.SubjectTokenType)
	st.attested(wl, err)
	if err != nil {
		errors.As(err, &x.condition)
		return mapErr(err, errSubjectRejected, "subject_token: ")
	}
	x.workload, x.notAfter = wl, wl.Expiry
	if oerr := s.limits.allowWorkload(wl.Upstream, wl.ID); oerr != nil {
		return refuse(oerr, "rate limited: per workload")
	}
	if x.chain, err = wl.ActChain(); err != nil {
		return mapErr(err, errSubjectRejected, "subject_token: ")
	}
	return nil
}

// attestActor verifies the actor token, if one was sent. A delegated subject
// token names its actors; whoever presents it again must say who they are, so
// the chain grows instead of being laundered into direct access.
func (s *tokenService) attestActor(ctx context.Context, x *exchangeState) *refusal {
	if x.req.ActorToken == "" {
		if len(x.chain) > 0 {
			return refuse(badRequest(codeInvalidRequest, "a delegated subject_token must be exchanged with an actor_token"), "subject_token carries act but no actor_token was sent")
		}
		return nil
	}
	st := s.tracing.step(ctx, spanAttestActor)
	actor, err := s.attestToken(ctx, x.mtls, x.req.ActorToken, x.req.ActorTokenType)
	st.attested(actor, err)
	if err != nil {
		errors.As(err, &x.condition)
		return mapErr(err, errActorRejected, "actor_token: ")
	}
	x.actor, x.depth = actor, 1+len(x.chain)
	if actor.Expiry.Before(x.notAfter) {
		x.notAfter = actor.Expiry
	}
	return nil
}

// decide asks policy, counts the decision and its audit-mode hits, and refuses
// with the OAuth error of the outcome; the decision's reason is the cause.
func (s *tokenService) decide(ctx context.Context, x *exchangeState) *refusal {
	x.now = s.now()
	st := s.tracing.step(ctx, spanPolicy)
	x.decision = s.policy().Decide(policy.Request{
		Workload:            x.workload,
		Actor:               x.actor,
		DelegationDepth:     x.depth,
		Audiences:           x.req.Audiences,
		Resources:           x.req.Resources,
		Scopes:              x.req.Scopes,
		RequestedTokenType:  x.req.RequestedTokenType,
		ClientID:            clientID(x.client, x.req.ClientID),
		ClientAuthenticated: x.client != nil,
		SenderConstrained:   x.mtls != nil,
		Now:                 x.now,
	})
	d := &x.decision
	st.decided(d.Rule, d.Outcome)
	s.metrics.decisions.WithLabelValues(d.Rule, d.Outcome.String()).Inc()
	for _, a := range d.Audited {
		s.metrics.audited.WithLabelValues(a.Rule, a.Would).Inc()
	}
	if d.Outcome == policy.DenyRequest {
		s.log.ErrorContext(ctx, "policy refused an inconsistent request", slog.String("reason", d.Reason))
	}
	if oerr := outcomeError(d.Outcome, x.client != nil); oerr != nil {
		return refuse(oerr, d.Reason)
	}
	return nil
}

// outcomeError is what the client is told of a policy outcome; nil for Allow.
// A refusal for no rule, an explicit deny or a missing sender constraint is
// indistinguishable from a bad subject token.
func outcomeError(o policy.Outcome, clientAuthenticated bool) *oauthError {
	switch o {
	case policy.Allow:
		return nil
	case policy.DenyTarget:
		return errTargetRefused
	case policy.DenyScope:
		return errScopeRefused
	case policy.DenyActor:
		return errActorRejected
	case policy.DenyClient:
		if !clientAuthenticated {
			return errClientRequired
		}
		return errSubjectRejected
	case policy.DenyRequest:
		return errServer
	default:
		return errSubjectRejected
	}
}

// admit runs the store's checks of an exchange policy allowed: it claims the
// tokens of one_time upstreams, then asks the store (one round trip) for blocks
// of this workload, its clock for iat (so that a concurrent revoke is ordered
// against this token) and the binding last recorded for this instance, and
// records a changed binding.
func (s *tokenService) admit(ctx context.Context, x *exchangeState) *refusal {
	if ref := s.claimOneTimeTokens(ctx, x); ref != nil {
		return ref
	}
	wl := x.workload
	x.facts = &revocation.Facts{
		Subject:     wl.ID,
		Upstream:    wl.Upstream,
		TrustDomain: wl.Attributes["trust_domain"],
		ClientID:    clientID(x.client, wl.ID),
		Audiences:   x.decision.Audiences,
		Attributes:  wl.Attributes,
	}
	b, bound := s.bindings[wl.Upstream]
	instance := ""
	if bound {
		x.facts.Binding = revocation.Fingerprint(wl.Attributes, b.names)
		instance = instanceKey(wl, b)
	}
	st := s.tracing.step(ctx, spanAdmit)
	adm, err := s.store.Admit(ctx, x.facts, instance)
	st.admitted(err)
	if err != nil {
		ref := mapErr(err, errUnavailable, "revocation store: ")
		if ref.oauth == errUnavailable {
			s.log.ErrorContext(ctx, "revocation store unavailable; refusing to issue", slog.String("error", err.Error()))
		}
		return ref
	}
	x.storeIAT = adm.IssuedAt
	if bound && adm.Binding != x.facts.Binding {
		// The instance changed (or is new): revoke tokens bound to its old
		// attributes before this one is minted under the new ones.
		if _, err := s.bind(ctx, b, wl, "exchange"); err != nil {
			return mapErr(err, errUnavailable, "revocation store: ")
		}
	}
	return nil
}

// claimOneTimeTokens: a token of a one_time upstream is good for one exchange
// that policy allows; the subject token is claimed first, then the actor token.
func (s *tokenService) claimOneTimeTokens(ctx context.Context, x *exchangeState) *refusal {
	if err := s.claimOneTime(ctx, x.workload, x.req.SubjectTokenType); err != nil {
		return mapErr(err, errSubjectRejected, "subject_token: ")
	}
	if x.actor == nil {
		return nil
	}
	if err := s.claimOneTime(ctx, x.actor, x.req.ActorTokenType); err != nil {
		return mapErr(err, errActorRejected, "actor_token: ")
	}
	return nil
}

// mint builds the claims of the admitted exchange and signs them. iat is the
// earlier of the clock policy decided at and the store's; the token expires
// within the rule's and the configured lifetime, never after the subject or
// actor token.
func (s *tokenService) mint(ctx context.Context, x *exchangeState) *refusal {
	d := &x.decision
	iat := x.now.Truncate(time.Second)
	if t := x.storeIAT.Truncate(time.Second); !t.IsZero() && t.Before(iat) {
		iat = t
	}
	exp, ok := s.expiry(iat, d.MaxTTL, x.notAfter)
	if !ok {
		return refuse(errSubjectRejected, "subject or actor token expires within a second")
	}
	c := &x.claims
	*c = claims{
		Subject:    x.workload.ID,
		Audience:   d.Audiences,
		IssuedAt:   iat,
		Expiry:     exp,
		ID:         newTokenID(),
		ClientID:   x.workload.ID,
		Scopes:     d.Scopes,
		Upstream:   x.workload.Upstream,
		Attributes: copyAttributes(x.workload.Attributes, d.CopyAttributes),
		Binding:    x.facts.Binding,
	}
	if x.actor != nil {
		c.ClientID = x.actor.ID
		c.Act = append([]attest.Actor{{Subject: x.actor.ID, Issuer: x.actor.Issuer}}, x.chain...)
	}
	if x.client != nil {
		c.ClientID = x.client.ID // authenticated: it outranks what the tokens say
	}
	if d.RequireSenderConstraint {
		// Policy allows this only for a request over mTLS (SenderConstrained), so
		// the client certificate is there to bind to (RFC 8705 §3.1).
		c.CertThumbprint = certThumbprint(x.r.TLS.PeerCertificates[0])
	}
	st := s.tracing.step(ctx, spanMint)
	tok, err := s.minter.mint(c)
	st.minted(c.ID, err)
	if err != nil {
		s.log.ErrorContext(ctx, "signing failed", slog.String("error", err.Error()))
		return refuse(errUnavailable, "mint: "+err.Error())
	}
	x.response = tokenResponse{
		AccessToken:     tok,
		IssuedTokenType: x.req.RequestedTokenType,
		ExpiresIn:       exp.Unix() - iat.Unix(),
		Scope:           strings.Join(d.Scopes, " "),
	}
	return nil
}

// event is the audit record of the exchange: what the phases learned, and its
// outcome. The audit reason is set here and nowhere else: the refusal's cause,
// or the reason of the policy decision that allowed the token.
func (x *exchangeState) event(ref *refusal) exchangeEvent {
	ev := exchangeEvent{
		outcome:    "issued",
		reason:     x.decision.Reason,
		rule:       x.decision.Rule,
		audited:    x.decision.Audited,
		workload:   x.workload,
		actor:      x.actor,
		client:     x.client,
		clientAuth: x.clientAuth,
		condition:  x.condition,
	}
	if x.req != nil {
		ev.subjectTokenSHA = tokenHash(x.req.SubjectToken)
		ev.audiences = slices.Concat(x.req.Audiences, x.req.Resources)
		ev.requestedAud, ev.requestedResource, ev.requestedScopes = x.req.Audiences, x.req.Resources, x.req.Scopes
	}
	if ref != nil {
		ev.outcome, ev.code, ev.reason, ev.blockEntry = "refused", ref.oauth.Code, ref.cause, ref.blockEntry
		return ev
	}
	ev.jti, ev.expiry, ev.scopes = x.claims.ID, x.claims.Expiry, x.decision.Scopes
	return ev
}

// record is the last step of every exchange, issued or refused: the exchange
// metrics, the request span's attributes and the audit event.
func (s *tokenService) record(ctx context.Context, ev *exchangeEvent, took time.Duration) {
	s.metrics.observeExchange(ev.outcome, ev.code, took)
	s.tracing.exchange(ctx, ev)
	if ev.outcome != "issued" {
		// An issued token's event was written before the response (handleToken).
		_ = s.audit(ctx, ev, false)
	}
}
