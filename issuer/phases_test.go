package issuer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/internal/testissuer"
	"github.com/safeconduct/safeconduct/internal/testspiffe"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// phase is one phase method of the exchange pipeline.
type phase func(*tokenService, context.Context, *exchangeState) *refusal

// phaseOrder are the phases in their pipeline order (to bring a state to where
// a phase under test starts).
var phaseOrder = []phase{
	(*tokenService).parseRequest,
	(*tokenService).authenticateClient,
	(*tokenService).attestSubject,
	(*tokenService).attestActor,
	(*tokenService).decide,
	(*tokenService).admit,
	(*tokenService).mint,
}

// tokenRequestOf is a POST /token request with form as its body.
func tokenRequestOf(form url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// stateBefore runs the phases before p on the request r (which must pass them)
// and returns the state p starts from.
func stateBefore(t *testing.T, s *Server, r *http.Request, p int) *exchangeState {
	t.Helper()
	x := &exchangeState{r: r}
	for i, ph := range phaseOrder[:p] {
		if ref := ph(s.tokens, r.Context(), x); ref != nil {
			t.Fatalf("phase %d refused: %s (%s)", i, ref.oauth, ref.cause)
		}
	}
	return x
}

// Indexes of phaseOrder.
const (
	phaseParse = iota
	phaseAuthenticate
	phaseAttestSubject
	phaseAttestActor
	phaseDecide
	phaseAdmit
	phaseMint
)

// wantRefusal checks a refusal's OAuth error (the same value, so the client
// sees exactly it) and that its cause starts with cause.
func wantRefusal(t *testing.T, ref *refusal, oerr *oauthError, cause string) {
	t.Helper()
	switch {
	case ref == nil:
		t.Fatalf("not refused, want %s (%s)", oerr, cause)
	case *ref.oauth != *oerr:
		t.Fatalf("refused with %+v, want %+v (cause %q)", *ref.oauth, *oerr, ref.cause)
	case !strings.HasPrefix(ref.cause, cause) || (cause == "" && ref.cause != ""):
		t.Fatalf("cause %q, want it to start with %q", ref.cause, cause)
	}
}

func TestPhaseParseRequest(t *testing.T) {
	s := startSTS(t, stsOptions{}).srv
	valid := validForm()
	cases := []struct {
		name  string
		r     func() *http.Request
		oerr  *oauthError
		cause string
	}{
		{"JSON body", func() *http.Request {
			r := tokenRequestOf(valid)
			r.Header.Set("Content-Type", "application/json")
			return r
		}, badRequest(codeInvalidRequest, "the body must be application/x-www-form-urlencoded"), ""},
		{"no content type", func() *http.Request {
			r := tokenRequestOf(valid)
			r.Header.Del("Content-Type")
			return r
		}, badRequest(codeInvalidRequest, "the body must be application/x-www-form-urlencoded"), ""},
		{"query parameters", func() *http.Request {
			r := tokenRequestOf(valid)
			r.URL.RawQuery = "subject_token=x"
			return r
		}, badRequest(codeInvalidRequest, "parameters must be sent in the body, not the URL"), ""},
		{"body too large", func() *http.Request {
			f := validForm()
			f.Set("pad", strings.Repeat("a", maxBodyBytes))
			return tokenRequestOf(f)
		}, &oauthError{Code: codeInvalidRequest, Description: "the request body is too large", Status: http.StatusRequestEntityTooLarge}, ""},
		{"body cannot be read", func() *http.Request {
			r := tokenRequestOf(valid)
			r.Body = io.NopCloser(iotest.ErrReader(errors.New("connection reset")))
			return r
		}, badRequest(codeInvalidRequest, "the request body could not be read"), ""},
		{"form error: the description is the cause", func() *http.Request {
			f := validForm()
			f.Del("grant_type")
			return tokenRequestOf(f)
		}, badRequest(codeInvalidRequest, "grant_type is required"), "grant_type is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := &exchangeState{r: c.r()}
			wantRefusal(t, s.tokens.parseRequest(context.Background(), x), c.oerr, c.cause)
			if x.req != nil {
				t.Fatal("a refused request was parsed")
			}
		})
	}
	x := &exchangeState{r: tokenRequestOf(valid)}
	if ref := s.tokens.parseRequest(context.Background(), x); ref != nil || x.req == nil || x.req.SubjectToken != "a.b.c" {
		t.Fatalf("valid request: %v %+v", ref, x.req)
	}
}

// withPeer makes r arrive over mTLS with the certificate chain of cert.
func withPeer(t *testing.T, r *http.Request, cert tls.Certificate) *http.Request {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: chain}
	return r
}

func TestPhaseAuthenticateClient(t *testing.T) {
	ts, ci, _ := clientSTS(t)
	sp, td := startSPIFFESTS(t)
	id := "spiffe://prod.example/ns/payments/sa/api"
	svid := td.TLSCertificate(t, id)
	untrusted := testspiffe.New(t, "prod.example").TLSCertificate(t, id)
	form := func(edits ...func(url.Values)) url.Values {
		f := validForm()
		for _, e := range edits {
			e(f)
		}
		return f
	}
	secret := func(f url.Values) { f.Set("client_secret", "s") }
	assert := func(f url.Values) { withAssertion(f, assertion(t, ts, ci)) }
	basic := func(r *http.Request) *http.Request { r.SetBasicAuth("c", "s"); return r }
	twoMethods := badRequest(codeInvalidRequest, "use exactly one client authentication method")
	cases := []struct {
		name     string
		s        *Server
		r        func() *http.Request
		oerr     *oauthError // nil: authenticated (or public)
		cause    string
		client   string
		authKind string
	}{
		{"public client", ts.srv, func() *http.Request { return tokenRequestOf(form()) }, nil, "", "", ""},
		{"private_key_jwt", ts.srv, func() *http.Request { return tokenRequestOf(form(assert)) }, nil, "", "ci-runner", "private_key_jwt"},
		{"mTLS", sp.srv, func() *http.Request { return withPeer(t, tokenRequestOf(form()), svid) }, nil, "", id, "tls_client_auth"},
		{"client_secret", ts.srv, func() *http.Request { return tokenRequestOf(form(secret)) },
			errClientSecret, "client secret sent; clients authenticate with mTLS or private_key_jwt", "", ""},
		{"basic auth", ts.srv, func() *http.Request { return basic(tokenRequestOf(form())) },
			errClientSecret, "client secret sent; clients authenticate with mTLS or private_key_jwt", "", ""},
		{"basic auth and client_secret", ts.srv, func() *http.Request { return basic(tokenRequestOf(form(secret))) },
			twoMethods, "two client authentication methods in one request", "", ""},
		{"assertion and client_secret", ts.srv, func() *http.Request { return tokenRequestOf(form(assert, secret)) },
			twoMethods, "two client authentication methods in one request", "", ""},
		{"mTLS and assertion", sp.srv, func() *http.Request { return withPeer(t, tokenRequestOf(form(assert)), svid) },
			twoMethods, "two client authentication methods in one request", "", ""},
		{"untrusted certificate and client_secret: two methods first", sp.srv, func() *http.Request { return withPeer(t, tokenRequestOf(form(secret)), untrusted) },
			twoMethods, "two client authentication methods in one request", "", ""},
		{"untrusted certificate", sp.srv, func() *http.Request { return withPeer(t, tokenRequestOf(form()), untrusted) },
			errClientCertificate, "client certificate: invalid token: ", "", ""},
		{"assertion of an unregistered client", ts.srv, func() *http.Request {
			return tokenRequestOf(withAssertion(form(), assertion(t, ts, testissuer.New(t, "nobody"))))
		}, errClientAuth, "client authentication: invalid token: client_assertion names no registered client", "", ""},
		{"assertion but no client registered", sp.srv, func() *http.Request { return tokenRequestOf(form(assert)) },
			errClientAuth, "client authentication: invalid token: a client assertion was sent but no client is registered", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := stateBefore(t, c.s, c.r(), phaseAuthenticate)
			ref := c.s.tokens.authenticateClient(context.Background(), x)
			if c.oerr != nil {
				wantRefusal(t, ref, c.oerr, c.cause)
				if x.client != nil || x.clientAuth != "" {
					t.Fatalf("refused, yet client %v (%s)", x.client, x.clientAuth)
				}
				return
			}
			if ref != nil {
				t.Fatalf("refused: %s (%s)", ref.oauth, ref.cause)
			}
			if got := clientID(x.client, ""); got != c.client || x.clientAuth != c.authKind {
				t.Fatalf("client %q (%s), want %q (%s)", got, x.clientAuth, c.client, c.authKind)
			}
			if (x.mtls != nil) != (c.authKind == "tls_client_auth") {
				t.Fatalf("mtls identity %v", x.mtls)
			}
		})
	}
}

func TestPhaseAuthenticateClientRateLimit(t *testing.T) {
	ci := testissuer.New(t, "ci-runner")
	ts := startSTS(t, stsOptions{
		extra: "limits: {per_client_rps: 0.01, client_burst: 1}\nclients:\n  - {id: ci-runner, jwks_file: ci.jwks}\n",
		files: map[string]string{"ci.jwks": string(ci.JWKS())},
	})
	authenticate := func() (*exchangeState, *refusal) {
		x := stateBefore(t, ts.srv, tokenRequestOf(withAssertion(validForm(), assertion(t, ts, ci))), phaseAuthenticate)
		return x, ts.srv.tokens.authenticateClient(context.Background(), x)
	}
	if _, ref := authenticate(); ref != nil {
		t.Fatalf("first request refused: %s", ref.cause)
	}
	x, ref := authenticate()
	if ref == nil || ref.oauth.Status != http.StatusTooManyRequests || ref.cause != "rate limited: per client" {
		t.Fatalf("second request of the client: %+v", ref)
	}
	if x.client == nil || x.client.ID != "ci-runner" {
		t.Fatal("the limited client is not recorded for the audit event")
	}
}

func TestPhaseAttestSubject(t *testing.T) {
	dead := closedAddr(t)
	down := testissuer.New(t, "https://"+dead)
	ts := startSTS(t, stsOptions{
		extra:     "limits: {per_workload_rps: 0.01, workload_burst: 1}\n",
		upstreams: fmt.Sprintf("  - name: down\n    kind: oidc\n    issuer: https://%s\n    audiences: [sts]\n", dead),
	})
	subject := func(tok, typ string) func() *http.Request {
		return func() *http.Request {
			f := ts.form(tok)
			f.Set("subject_token_type", typ)
			return tokenRequestOf(f)
		}
	}
	cases := []struct {
		name     string
		r        func() *http.Request
		oerr     *oauthError
		cause    string
		workload bool // the refusal is after attestation: the workload is known
	}{
		{"forged", subject(testissuer.New(t, "https://issuer.example").Token(t, payments), TypeJWT), errSubjectRejected, "subject_token: upstream \"cluster-a\": invalid token: ", false},
		{"not a JWT", subject("opaque", TypeJWT), errSubjectRejected, "subject_token: malformed token", false},
		{"X.509-SVID without mTLS", subject("spiffe://prod.example/x", TypeX509SVID), errSubjectRejected,
			"subject_token: invalid token: " + TypeX509SVID + " needs a client certificate (mTLS)", false},
		{"upstream unreachable", subject(down.Token(t, payments), TypeJWT), errUnavailable, "subject_token: ", false},
		{"act is not an object", subject(ts.a.Token(t, outsider, func(c map[string]any) { c["act"] = "gw" }), TypeJWT), errSubjectRejected,
			"subject_token: invalid token: act at depth 0 is not an object", true},
		{"workload over its limit", subject(ts.a.Token(t, payments), TypeJWT), nil, "", true},
		{"workload over its limit, again", subject(ts.a.Token(t, payments), TypeJWT), rateLimited(time.Second), "rate limited: per workload", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := stateBefore(t, ts.srv, c.r(), phaseAttestSubject)
			ref := ts.srv.tokens.attestSubject(context.Background(), x)
			if c.oerr == nil {
				if ref != nil {
					t.Fatalf("refused: %s", ref.cause)
				}
			} else {
				if c.oerr.Status == http.StatusTooManyRequests && ref != nil {
					// The limiter's wait is limits_test's concern.
					c.oerr = rateLimited(time.Duration(ref.oauth.RetryAfter) * time.Second)
				}
				wantRefusal(t, ref, c.oerr, c.cause)
			}
			if (x.workload != nil) != c.workload {
				t.Fatalf("workload %v", x.workload)
			}
		})
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestPhaseAttestActor(t *testing.T) {
	ts := startDelegationSTS(t)
	gateway := "system:serviceaccount:gateway:edge"
	f := actorForm(ts.form(ts.a.Token(t, payments)), ts.a.Token(t, gateway))
	f.Set("audience", "sts-self")
	r := ts.post(t, f)
	if r.status != 200 {
		t.Fatalf("first hop: %d %s", r.status, r.raw)
	}
	hop1 := r.body["access_token"].(string)
	soon := time.Now().Add(2 * time.Minute).Truncate(time.Second)
	shortActor := ts.a.Token(t, gateway, func(c map[string]any) { c["exp"] = soon.Unix() })

	t.Run("direct", func(t *testing.T) {
		x := stateBefore(t, ts.srv, tokenRequestOf(ts.form(ts.a.Token(t, payments))), phaseAttestActor)
		if ref := ts.srv.tokens.attestActor(context.Background(), x); ref != nil || x.actor != nil || x.depth != 0 || !x.notAfter.Equal(x.workload.Expiry) {
			t.Fatalf("%+v actor %v depth %d", ref, x.actor, x.depth)
		}
	})
	t.Run("delegated subject without actor_token", func(t *testing.T) {
		x := stateBefore(t, ts.srv, tokenRequestOf(ts.form(hop1)), phaseAttestActor)
		wantRefusal(t, ts.srv.tokens.attestActor(context.Background(), x),
			badRequest(codeInvalidRequest, "a delegated subject_token must be exchanged with an actor_token"),
			"subject_token carries act but no actor_token was sent")
	})
	t.Run("actor not a JWT", func(t *testing.T) {
		x := stateBefore(t, ts.srv, tokenRequestOf(actorForm(ts.form(ts.a.Token(t, payments)), "opaque")), phaseAttestActor)
		wantRefusal(t, ts.srv.tokens.attestActor(context.Background(), x), errActorRejected, "actor_token: malformed token")
		if x.actor != nil {
			t.Fatal("a rejected actor is recorded")
		}
	})
	t.Run("actor of a delegated subject, expiring first", func(t *testing.T) {
		x := stateBefore(t, ts.srv, tokenRequestOf(actorForm(ts.form(hop1), shortActor)), phaseAttestActor)
		if ref := ts.srv.tokens.attestActor(context.Background(), x); ref != nil {
			t.Fatalf("refused: %s", ref.cause)
		}
		if x.actor.ID != gateway || x.depth != 2 || len(x.chain) != 1 || !x.notAfter.Equal(soon) {
			t.Fatalf("actor %s depth %d chain %v notAfter %v, want %v", x.actor.ID, x.depth, x.chain, x.notAfter, soon)
		}
	})
}

func TestOutcomeError(t *testing.T) {
	cases := []struct {
		o             policy.Outcome
		authenticated bool
		want          *oauthError
	}{
		{policy.Allow, false, nil},
		{policy.DenyNoRule, false, errSubjectRejected},
		{policy.DenyRule, false, errSubjectRejected},
		{policy.DenyTarget, false, errTargetRefused},
		{policy.DenyScope, false, errScopeRefused},
		{policy.DenyActor, false, errActorRejected},
		{policy.DenyClient, false, errClientRequired},
		{policy.DenyClient, true, errSubjectRejected},
		{policy.DenySenderConstraint, false, errSubjectRejected},
		{policy.DenyRequest, false, errServer},
		{policy.DenyAction, false, errSubjectRejected},
	}
	for _, c := range cases {
		if got := outcomeError(c.o, c.authenticated); got != c.want {
			t.Errorf("%s (client authenticated %v): %v, want %v", c.o, c.authenticated, got, c.want)
		}
	}
}

func TestPhaseDecide(t *testing.T) {
	ts, ci, laptop := clientSTS(t)
	deployReq := func(edit func(url.Values) url.Values) *http.Request { return tokenRequestOf(edit(ts.deployForm(t))) }
	none := func(f url.Values) url.Values { return f }
	cases := []struct {
		name  string
		r     *http.Request
		oerr  *oauthError
		cause string
		rule  string
	}{
		{"allowed", tokenRequestOf(ts.form(ts.a.Token(t, payments))), nil, `rule "payments-to-ledger" grants every requested target and scope`, "payments-to-ledger"},
		{"no rule", tokenRequestOf(ts.form(ts.a.Token(t, outsider))), errSubjectRejected, `no rule matches upstream "cluster-a"`, ""},
		{"deny rule", tokenRequestOf(ts.form(ts.a.Token(t, blocked))), errSubjectRejected, `deny rule "block-payments-blocked"`, "block-payments-blocked"},
		{"client required", deployReq(none), errClientRequired, `rule "deploy-from-ci" grants only to an authenticated client`, ""},
		{"another client", deployReq(func(f url.Values) url.Values { return withAssertion(f, assertion(t, ts, laptop)) }), errSubjectRejected, `rule "deploy-from-ci"`, ""},
		{"the client", deployReq(func(f url.Values) url.Values { return withAssertion(f, assertion(t, ts, ci)) }), nil, `rule "deploy-from-ci" grants`, "deploy-from-ci"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := stateBefore(t, ts.srv, c.r, phaseDecide)
			ref := ts.srv.tokens.decide(context.Background(), x)
			if c.oerr != nil {
				wantRefusal(t, ref, c.oerr, c.cause)
				if ref.cause != x.decision.Reason {
					t.Fatalf("cause %q is not the decision's reason %q", ref.cause, x.decision.Reason)
				}
			} else if ref != nil {
				t.Fatalf("refused: %s", ref.cause)
			}
			if !strings.HasPrefix(x.decision.Reason, c.cause) || x.decision.Rule != c.rule || x.now.IsZero() {
				t.Fatalf("decision %+v at %v", x.decision, x.now)
			}
		})
	}
}

func TestMapErr(t *testing.T) {
	blockedErr := &revocation.BlockedError{Entry: revocation.Entry{ID: "e1", Reason: "incident"}}
	cases := []struct {
		name     string
		err      error
		fallback *oauthError
		prefix   string
		want     *oauthError
		cause    string
	}{
		{"invalid subject", fmt.Errorf("%w: bad signature", attest.ErrInvalid), errSubjectRejected, "subject_token: ", errSubjectRejected, "subject_token: invalid token: bad signature"},
		{"invalid client", fmt.Errorf("%w: no jti", attest.ErrInvalid), errClientAuth, "client authentication: ", errClientAuth, "client authentication: invalid token: no jti"},
		{"upstream unavailable", fmt.Errorf("%w: jwks", attest.ErrUnavailable), errActorRejected, "actor_token: ", errUnavailable, "actor_token: upstream keys unavailable: jwks"},
		{"blocked", fmt.Errorf("admit: %w", blockedErr), errUnavailable, "revocation store: ", errSubjectRejected, "revocation: admit: revocation: issuance blocked by entry e1: incident"},
		{"store unavailable", errors.New("redis: connection refused"), errUnavailable, "revocation store: ", errUnavailable, "revocation store: redis: connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := mapErr(c.err, c.fallback, c.prefix)
			if ref.oauth != c.want || ref.cause != c.cause {
				t.Fatalf("%v %q, want %v %q", ref.oauth, ref.cause, c.want, c.cause)
			}
		})
	}
}

func TestPhaseAdmit(t *testing.T) {
	ts := startSTS(t, stsOptions{aExtra: "    one_time: true\n    preset: kubernetes\n    binding_attributes: [pod_uid]\n"})
	pod := func(uid string) func(map[string]any) {
		return func(c map[string]any) {
			c["kubernetes.io"] = map[string]any{"namespace": "payments", "serviceaccount": map[string]any{"name": "api", "uid": "sa"}, "pod": map[string]any{"name": "p", "uid": uid}}
		}
	}
	admit := func(r *http.Request) (*exchangeState, *refusal) {
		x := stateBefore(t, ts.srv, r, phaseAdmit)
		return x, ts.srv.tokens.admit(context.Background(), x)
	}
	replayed := ts.a.Token(t, payments, pod("pod-1"))

	t.Run("admitted: store clock, binding recorded", func(t *testing.T) {
		before := time.Now()
		x, ref := admit(tokenRequestOf(ts.form(replayed)))
		if ref != nil {
			t.Fatalf("refused: %s", ref.cause)
		}
		if x.storeIAT.Before(before.Add(-time.Second)) || x.storeIAT.After(time.Now()) || x.facts.Binding == "" || x.facts.Subject != payments {
			t.Fatalf("store iat %v, facts %+v", x.storeIAT, x.facts)
		}
	})
	t.Run("one_time subject replayed", func(t *testing.T) {
		_, ref := admit(tokenRequestOf(ts.form(replayed)))
		wantRefusal(t, ref, errSubjectRejected, `subject_token: token of one_time upstream "cluster-a": invalid token: jti already used (replay)`)
	})
	t.Run("one_time actor without jti", func(t *testing.T) {
		x := stateBefore(t, ts.srv, tokenRequestOf(ts.form(ts.a.Token(t, payments, pod("pod-1")))), phaseAdmit)
		x.actor = &attest.Workload{Upstream: "cluster-a", ID: "gw", Expiry: time.Now().Add(time.Minute)}
		x.req.ActorTokenType = TypeJWT
		wantRefusal(t, ts.srv.tokens.admit(context.Background(), x), errActorRejected, `actor_token: invalid token: upstream "cluster-a" is one_time and the token has no jti`)
	})
	t.Run("instance changed: old tokens revoked", func(t *testing.T) {
		if _, ref := admit(tokenRequestOf(ts.form(ts.a.Token(t, payments, pod("pod-2"))))); ref != nil {
			t.Fatalf("refused: %s", ref.cause)
		}
		if !strings.Contains(ts.audit.String(), `"event":"change_fired","trigger":"exchange"`) {
			t.Fatalf("no change fired:\n%s", ts.audit.String())
		}
	})
	t.Run("blocked", func(t *testing.T) {
		sel := revocation.MustParseSelector("upstream=cluster-a,sub=" + payments)
		if _, err := ts.srv.store.Create(context.Background(), revocation.Entry{Kind: revocation.KindBlock, Selector: sel.String(), Reason: "incident 7", Actor: "test"}); err != nil {
			t.Fatal(err)
		}
		_, ref := admit(tokenRequestOf(ts.form(ts.a.Token(t, payments, pod("pod-2")))))
		wantRefusal(t, ref, errSubjectRejected, "revocation: issuance blocked by entry ")
		if !strings.HasSuffix(ref.cause, ": incident 7") {
			t.Fatalf("cause %q lacks the block's reason", ref.cause)
		}
		if ref.blockEntry == "" || !strings.Contains(ref.cause, ref.blockEntry) {
			t.Fatalf("refusal names block entry %q, cause %q", ref.blockEntry, ref.cause)
		}
	})

	down := startSTS(t, stsOptions{revocation: fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q]}\n", closedAddr(t))})
	t.Run("store unavailable", func(t *testing.T) {
		x := stateBefore(t, down.srv, tokenRequestOf(down.form(down.a.Token(t, payments))), phaseAdmit)
		wantRefusal(t, down.srv.tokens.admit(context.Background(), x), errUnavailable, "revocation store: ")
	})
}

func TestPhaseMint(t *testing.T) {
	sp, td := startSPIFFESTS(t)
	id := "spiffe://prod.example/ns/payments/sa/api"
	svid := td.TLSCertificate(t, id)
	state := func(audience string) *exchangeState {
		return stateBefore(t, sp.srv, withPeer(t, tokenRequestOf(spiffeForm(id, TypeX509SVID, audience)), svid), phaseMint)
	}
	mint := func(x *exchangeState) map[string]any {
		t.Helper()
		if ref := sp.srv.tokens.mint(context.Background(), x); ref != nil {
			t.Fatalf("refused: %s", ref.cause)
		}
		return decodeSegment(t, x.response.AccessToken, 1)
	}

	t.Run("subject expires within a second", func(t *testing.T) {
		x := state(ledger)
		x.storeIAT = time.Time{} // iat is now, truncated
		x.notAfter = x.now.Truncate(time.Second).Add(999 * time.Millisecond)
		wantRefusal(t, sp.srv.tokens.mint(context.Background(), x), errSubjectRejected, "subject or actor token expires within a second")
		if x.response.AccessToken != "" {
			t.Fatal("a token was minted")
		}
	})
	t.Run("capped by the subject's expiry", func(t *testing.T) {
		x := state(ledger)
		x.notAfter = x.now.Add(90 * time.Second)
		c := mint(x)
		if exp := int64(c["exp"].(float64)); exp != x.notAfter.Unix() || x.response.ExpiresIn != exp-int64(c["iat"].(float64)) {
			t.Fatalf("exp %d, want %d; expires_in %d", exp, x.notAfter.Unix(), x.response.ExpiresIn)
		}
	})
	t.Run("iat from the store's earlier clock", func(t *testing.T) {
		x := state(ledger)
		x.storeIAT = x.now.Add(-3 * time.Second)
		if iat := int64(mint(x)["iat"].(float64)); iat != x.storeIAT.Unix() {
			t.Fatalf("iat %d, want the store's %d", iat, x.storeIAT.Unix())
		}
	})
	t.Run("sender-constrained", func(t *testing.T) {
		c := mint(state("https://vault.internal"))
		if cnf, _ := c["cnf"].(map[string]any); cnf["x5t#S256"] != certThumbprint(svid.Leaf) {
			t.Fatalf("cnf %v", c["cnf"])
		}
	})
	t.Run("actor and authenticated client", func(t *testing.T) {
		x := state(ledger)
		x.actor = &attest.Workload{ID: "spiffe://prod.example/gw", Issuer: "https://gw"}
		x.chain = []attest.Actor{{Subject: "first"}}
		c := mint(x)
		if c["client_id"] != id || c["act"].(map[string]any)["sub"] != "spiffe://prod.example/gw" || x.response.Scope != "" {
			t.Fatalf("claims %v", c)
		}
		x.client = nil
		if c := mint(x); c["client_id"] != "spiffe://prod.example/gw" {
			t.Fatalf("without a client, client_id %v; want the actor", c["client_id"])
		}
	})
}

func TestExchangeStateEvent(t *testing.T) {
	wl := &attest.Workload{Upstream: "u", ID: "w"}
	decided := exchangeState{
		req:      &tokenRequest{SubjectToken: "tok", Audiences: []string{"a"}, Resources: []string{"https://r"}},
		workload: wl,
		decision: policy.Decision{Rule: "r", Reason: "allowed by r", Scopes: []string{"s"}},
		claims:   claims{ID: "j", Expiry: time.Unix(100, 0)},
	}
	ev := decided.event(nil)
	if ev.outcome != "issued" || ev.code != "" || ev.reason != "allowed by r" || ev.rule != "r" || ev.jti != "j" || ev.expiry.Unix() != 100 ||
		ev.scopes[0] != "s" || ev.workload != wl || len(ev.audiences) != 2 || ev.subjectTokenSHA != tokenHash("tok") {
		t.Fatalf("issued: %+v", ev)
	}
	ev = decided.event(refuse(errUnavailable, "revocation store: down"))
	if ev.outcome != "refused" || ev.code != codeTemporarilyUnavailable || ev.reason != "revocation store: down" || ev.rule != "r" || ev.jti != "" {
		t.Fatalf("refused after policy: %+v", ev)
	}
	ev = (&exchangeState{}).event(refuse(badRequest(codeInvalidRequest, "use POST"), ""))
	if ev.reason != "" || ev.subjectTokenSHA != "" || ev.audiences != nil || ev.rule != "" {
		t.Fatalf("refused before parsing: %+v", ev)
	}
}
