package issuer

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

// tokenService is the /token pipeline: it owns the order of an exchange
// (exchange.go) and what only it needs: the post-verification limits, the TTL
// bounds and the one-time upstreams. (The registered clients are core's: the
// introspection and revocation endpoints authenticate them too.)
type tokenService struct {
	*core
	limits     *tokenLimits
	defaultTTL time.Duration
	// oneTime holds the clock skew of each upstream marked one_time.
	oneTime map[string]time.Duration
}

// handleToken is POST /token: the pipeline driver. exchange runs the phases in
// their one order (parse -> authenticate client -> attest subject and actor ->
// policy -> one-time claims, revocation and binding -> mint) so that no token
// type can skip a step; then come the response and the record of the exchange,
// whose audit reason is the refusal's cause (exchangeState.event).
func (s *tokenService) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, &oauthError{Code: codeInvalidRequest, Description: "use POST", Status: http.StatusMethodNotAllowed})
		return
	}
	start := s.now()
	x := &exchangeState{r: r}
	ref := s.auditRefusal()
	if ref == nil {
		ref = s.exchange(r.Context(), x)
	}
	ev := x.event(ref)
	ev.clientAddr = s.clientIP(r)
	if ref == nil {
		// The issued event is written before the token is handed out: under
		// fail_closed a token whose event cannot be written is never answered.
		if err := s.audit(r.Context(), &ev, true); err != nil {
			ref = refuse(errUnavailable, "audit: "+err.Error())
			ev = x.event(ref)
			ev.clientAddr = s.clientIP(r)
		}
	}
	if ref != nil {
		writeError(w, ref.oauth)
	} else {
		writeTokenResponse(w, &x.response)
	}
	s.record(r.Context(), &ev, s.now().Sub(start))
}

// auditRefusal refuses an exchange before any work while its audit event could
// not be written (on_failure fail_closed and the audit path failed).
func (s *tokenService) auditRefusal() *refusal {
	if s.auditRefuses() {
		return refuse(errUnavailable, "audit: the audit log cannot be written")
	}
	return nil
}

// tokenResponse is the RFC 8693 §2.2.1 success body.
type tokenResponse struct {
	AccessToken     string
	IssuedTokenType string
	ExpiresIn       int64
	Scope           string
}

// expiry is min(default TTL, rule max, config max) from iat, never after the subject
// token's own exp. ok is false when less than a second would remain.
func (s *tokenService) expiry(iat time.Time, ruleMax time.Duration, subjectExp time.Time) (time.Time, bool) {
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
	outcome   string
	code      string
	reason    string
	rule      string
	workload  *attest.Workload
	audiences []string
	// requested* are the targets and scopes the request asked for; scopes
	// those granted (issued only).
	requestedAud      []string
	requestedResource []string
	requestedScopes   []string
	scopes            []string
	// blockEntry is the revocation entry of a block that refused the exchange.
	blockEntry      string
	jti             string
	expiry          time.Time
	actor           *attest.Workload
	client          *attest.Workload
	clientAuth      string // tls_client_auth or private_key_jwt
	audited         []policy.AuditHit
	subjectTokenSHA string
	clientAddr      netip.Addr
	// condition is the upstream condition that refused a token (subject or
	// actor), audited as refused_by_upstream and upstream_condition.
	condition *attest.ConditionError
}

// audit writes one structured event per exchange decision to the audit log;
// durable (an issued token) waits for it to be written under fail_closed.
func (s *tokenService) audit(ctx context.Context, ev *exchangeEvent, durable bool) error {
	return s.auditEvent(ctx, ev.level(), "exchange", ev.fields, durable)
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
func (s *tokenService) attestToken(ctx context.Context, client *attest.Workload, raw, tokenType string) (*attest.Workload, error) {
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
	// pendingBodies counts the connection's requests whose body is being read
	// (limits.go).
	pendingBodies atomic.Int32
}

type connKey struct{}

// clientIdentity returns the verified X.509-SVID identity of the client, nil when
// it sent no certificate, or an error when the certificate is not a valid SVID.
func (s *core) clientIdentity(ctx context.Context, r *http.Request) (*attest.Workload, error) {
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
