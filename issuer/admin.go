package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// Paths of the admin API, introspection and the revocation feed.
const (
	PathIntrospect     = "/introspect"
	PathRevocations    = revocation.FeedSnapshotPath
	PathRevocationFeed = revocation.FeedStreamPath
	PathAdmin          = "/admin/v1/"
)

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 16 << 10

// adminService is the admin API, introspection and the revocation feed: callers
// authenticated like workloads and authorized by the policy's admin rules.
type adminService struct {
	*core
	// upstreamByIssuer resolves iss= selector terms to upstream names.
	upstreamByIssuer map[string]string
}

// adminError is an error answer of the admin API, introspection or the feed.
type adminError struct {
	status int
	code   string
	desc   string
}

func (e *adminError) Error() string { return e.code + ": " + e.desc }

var (
	errUnauthenticated = &adminError{http.StatusUnauthorized, "invalid_token", "a valid bearer token or client certificate is required"}
	errForbidden       = &adminError{http.StatusForbidden, "insufficient_scope", "policy does not allow this caller this action"}
	errStoreDown       = &adminError{http.StatusServiceUnavailable, "temporarily_unavailable", "the revocation store cannot be reached; nothing was recorded"}
	errAuditDown       = &adminError{http.StatusServiceUnavailable, "temporarily_unavailable", "the audit log cannot be written; nothing was recorded"}
)

func writeAdminError(w http.ResponseWriter, e *adminError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	if e.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": e.code, "error_description": e.desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// auditAdmin writes the audit record of an admin action.
func (s *adminService) auditAdmin(r *http.Request, action, outcome string, caller *attest.Workload, attrs ...slog.Attr) {
	_ = s.writeAdminEvent(r, action, outcome, caller, false, attrs)
}

// auditChange writes the record of a change made (outcome recorded); under
// fail_closed it fails when the event was not written within the bound.
func (s *adminService) auditChange(r *http.Request, action string, caller *attest.Workload, attrs ...slog.Attr) error {
	return s.writeAdminEvent(r, action, "recorded", caller, true, attrs)
}

func (s *adminService) writeAdminEvent(r *http.Request, action, outcome string, caller *attest.Workload, durable bool, attrs []slog.Attr) error {
	all := []slog.Attr{slog.String("event", action), slog.String("outcome", outcome), clientAddrAttr(s.clientIP(r), false)}
	if caller != nil {
		all = append(all, slog.String("caller_upstream", caller.Upstream), slog.String("caller", caller.ID))
	}
	all = append(all, attrs...)
	if durable {
		return s.auditDurable(r.Context(), slog.LevelInfo, action, all...)
	}
	s.auditLog.LogAttrs(r.Context(), slog.LevelInfo, action, all...)
	return nil
}

// auditBlocksChange answers 503 before a change is made while its audit event
// could not be written (on_failure fail_closed and the audit path failed); the
// refusal is audited (it may be written once the path recovers).
func (s *adminService) auditBlocksChange(w http.ResponseWriter, r *http.Request, action string, caller *attest.Workload) bool {
	if !s.auditRefuses() {
		return false
	}
	s.auditAdmin(r, action, "refused", caller, slog.String("error", "the audit log cannot be written"))
	writeAdminError(w, errAuditDown)
	return true
}

// auditLost answers a change made whose audit event could not be written: 503,
// naming what was recorded, so that the caller knows the audit trail lacks it.
func auditLost(w http.ResponseWriter, what string) {
	writeAdminError(w, &adminError{http.StatusServiceUnavailable, "temporarily_unavailable",
		what + ", but its audit event could not be written (the audit log has failed)"})
}

// authorize authenticates the caller (bearer token attested like a subject token,
// or the mTLS X.509-SVID) and asks policy whether it may perform action on targets.
// Refusals are audited.
func (s *adminService) authorize(w http.ResponseWriter, r *http.Request, action string, targets []string) (*attest.Workload, bool) {
	caller, ok := s.admitCaller(w, r, action)
	if !ok || !s.permit(w, r, caller, action, targets) {
		return nil, false
	}
	return caller, true
}

// admitCaller is the first step of every admin handler, before the request body
// is read: it authenticates the caller and checks that some admin rule grants it
// one of actions on some upstream. Whoever is not an admin for these actions gets
// 401 or 403 and never a word about the body.
func (s *adminService) admitCaller(w http.ResponseWriter, r *http.Request, actions ...string) (*attest.Workload, bool) {
	return s.admitCallerFor(w, r, nil, actions...)
}

// admitCallerFor is admitCaller whose refusal of an authenticated caller is
// audited as what the request asked for: detail (when set) names the action
// and the fields of the request (it may read the bounded body; the answer
// says nothing about it either way).
func (s *adminService) admitCallerFor(w http.ResponseWriter, r *http.Request, detail func() (string, []slog.Attr), actions ...string) (*attest.Workload, bool) {
	ctx := r.Context()
	caller, err := s.caller(ctx, r)
	if err != nil {
		s.auditAdmin(r, actions[0], "unauthenticated", nil, slog.String("reason", err.Error()))
		if errors.Is(err, attest.ErrUnavailable) {
			writeAdminError(w, errStoreDown)
			return nil, false
		}
		writeAdminError(w, errUnauthenticated)
		return nil, false
	}
	var last policy.Decision
	for _, action := range actions {
		// Every upstream as the target: DenyTarget means a rule grants the action
		// on some of them, which the request's own targets then decide.
		d := s.policy().DecideAdmin(policy.AdminRequest{Caller: caller, Action: action, Now: s.now()})
		if d.Allowed() || d.Outcome == policy.DenyTarget {
			return caller, true
		}
		last = d
	}
	action, attrs := actions[0], []slog.Attr{slog.String("reason", last.Reason)}
	if detail != nil {
		if a, more := detail(); a != "" {
			action, attrs = a, append(attrs, more...)
		}
	}
	s.metrics.countAdmin(action, last)
	s.auditAdmin(r, action, "denied", caller, attrs...)
	writeAdminError(w, errForbidden)
	return nil, false
}

// permit asks policy whether caller may perform action on targets; a refusal is
// audited and answered 403.
func (s *adminService) permit(w http.ResponseWriter, r *http.Request, caller *attest.Workload, action string, targets []string, attrs ...slog.Attr) bool {
	d := s.policy().DecideAdmin(policy.AdminRequest{Caller: caller, Action: action, TargetUpstreams: targets, Now: s.now()})
	s.metrics.countAdmin(action, d)
	if !d.Allowed() {
		s.auditAdmin(r, action, "denied", caller, append([]slog.Attr{slog.String("reason", d.Reason)}, attrs...)...)
		writeAdminError(w, errForbidden)
		return false
	}
	return true
}

// caller is the authenticated identity of an admin, introspection or feed request.
func (s *adminService) caller(ctx context.Context, r *http.Request) (*attest.Workload, error) {
	auth := r.Header.Get("Authorization")
	client, err := s.clientIdentity(ctx, r)
	if err != nil {
		return nil, err
	}
	if auth == "" {
		if client != nil {
			return client, nil
		}
		return nil, errors.New("no credential")
	}
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, errors.New("malformed Authorization header")
	}
	if client != nil {
		return nil, errors.New("two credentials (bearer and client certificate)")
	}
	return s.attester.Attest(ctx, strings.TrimSpace(tok), attest.TypeJWT)
}

// entryJSON is the wire form of an entry (docs/revocation-design.md).
func entryJSON(e revocation.Entry) json.RawMessage {
	b, err := json.Marshal(e)
	if err != nil {
		return json.RawMessage(`null`)
	}
	return b
}

type createRevocation struct {
	Selector string `json:"selector"`
	Kind     string `json:"kind"`
	Reason   string `json:"reason"`
	For      string `json:"for"`
}

// handleCreateRevocation is POST /admin/v1/revocations.
func (s *adminService) handleCreateRevocation(w http.ResponseWriter, r *http.Request) {
	var req createRevocation
	var bodyErr error
	read := false
	readBody := func() {
		if !read {
			read, bodyErr = true, decodeJSONBody(r, &req)
		}
	}
	// A caller refused outright is audited with what it asked for: a block as
	// a block, with its selector.
	detail := func() (string, []slog.Attr) {
		readBody()
		if bodyErr != nil {
			return "", nil
		}
		action := policy.ActionRevoke
		if req.Kind == string(revocation.KindBlock) {
			action = policy.ActionBlock
		}
		selector := boundedField(req.Selector)
		if sel, err := s.resolveSelector(req.Selector); err == nil {
			selector = sel.String()
		}
		return action, []slog.Attr{slog.String("selector", selector)}
	}
	caller, ok := s.admitCallerFor(w, r, detail, policy.ActionRevoke, policy.ActionBlock)
	if !ok {
		return
	}
	if readBody(); bodyErr != nil {
		err := bodyErr
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	}
	if req.Kind == "" {
		req.Kind = string(revocation.KindRevoke)
	}
	sel, err := s.resolveSelector(req.Selector)
	if err != nil {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	}
	action := policy.ActionRevoke
	if req.Kind == string(revocation.KindBlock) {
		action = policy.ActionBlock
	}
	if !s.permit(w, r, caller, action, selectorUpstreams(sel), slog.String("selector", sel.String())) {
		return
	}
	// A revoke with a kid term ignores iat: never on a key that signs, nor on a
	// kid this STS never had (see handleRevokeKey). A block with one is refused by
	// the store.
	kid, byKey := sel.Value(revocation.KeyKeyID)
	if byKey && req.Kind == string(revocation.KindRevoke) {
		if e := s.checkRevocableKey(kid); e != nil {
			s.auditAdmin(r, action, "refused", caller, slog.String("selector", sel.String()), slog.String("error", e.desc))
			writeAdminError(w, e)
			return
		}
	}
	e := revocation.Entry{Kind: revocation.Kind(req.Kind), Selector: sel.String(), Reason: req.Reason, Actor: caller.Upstream + ":" + caller.ID}
	now := s.now()
	switch {
	case req.For != "":
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 {
			writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", "for must be a positive duration such as 1h"})
			return
		}
		e.Expires = now.Add(d)
	case e.Kind == revocation.KindRevoke && byKey:
		e.Expires = s.keyRevokeExpiry(kid, now)
	case e.Kind == revocation.KindRevoke:
		// Every token it can match has expired after the longest token lifetime.
		e.Expires = now.Add(s.maxTTL + time.Minute)
	}
	s.recordEntry(w, r, action, caller, e)
}

// recordEntry creates e in the store, counts and audits it (with extra first),
// and answers 201 with the entry; or 400 for an entry the store refuses, 503
// when it is unreachable (the failure audited too).
func (s *adminService) recordEntry(w http.ResponseWriter, r *http.Request, action string, caller *attest.Workload, e revocation.Entry, extra ...slog.Attr) {
	if s.auditBlocksChange(w, r, action, caller) {
		return
	}
	created, err := s.store.Create(r.Context(), e)
	if err != nil {
		s.auditAdmin(r, action, "error", caller, append(extra, slog.String("selector", e.Selector), slog.String("error", err.Error()))...)
		if errors.Is(err, revocation.ErrInvalid) {
			writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", "the entry is invalid: " + err.Error()})
			return
		}
		writeAdminError(w, errStoreDown)
		return
	}
	s.metrics.revocations.WithLabelValues(string(created.Kind)).Inc()
	if err := s.auditChange(r, action, caller, append(extra, slog.String("id", created.ID), slog.String("selector", created.Selector),
		slog.String("reason", created.Reason), slog.Time("expires", created.Expires))...); err != nil {
		auditLost(w, "the entry was recorded as "+created.ID)
		return
	}
	writeJSON(w, http.StatusCreated, entryJSON(created))
}

// handleListRevocations is GET /admin/v1/revocations.
func (s *adminService) handleListRevocations(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r, policy.ActionList, nil); !ok {
		return
	}
	entries, err := s.store.List(r.Context(), r.URL.Query().Get("all") == "true")
	if err != nil {
		writeAdminError(w, errStoreDown)
		return
	}
	out := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		out[i] = entryJSON(e)
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out})
}

// handleLiftRevocation is DELETE /admin/v1/revocations/{id}.
func (s *adminService) handleLiftRevocation(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.authorize(w, r, policy.ActionLift, nil)
	if !ok {
		return
	}
	id := r.PathValue("id")
	reason := r.URL.Query().Get("reason")
	if reason == "" {
		reason = "lifted"
	}
	if s.auditBlocksChange(w, r, policy.ActionLift, caller) {
		return
	}
	lifted, err := s.store.Lift(r.Context(), id, caller.Upstream+":"+caller.ID, reason)
	switch {
	case errors.Is(err, revocation.ErrNotFound):
		writeAdminError(w, &adminError{http.StatusNotFound, "not_found", "no such revocation"})
		return
	case errors.Is(err, revocation.ErrInvalid):
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "lift failed", slog.String("id", id), slog.String("error", err.Error()))
		writeAdminError(w, errStoreDown)
		return
	}
	if err := s.auditChange(r, policy.ActionLift, caller, slog.String("id", id), slog.String("selector", lifted.Selector)); err != nil {
		auditLost(w, "the entry "+id+" was lifted")
		return
	}
	writeJSON(w, http.StatusOK, entryJSON(lifted))
}

type changeReport struct {
	Upstream   string            `json:"upstream"`
	Subject    string            `json:"subject"`
	Attributes map[string]string `json:"attributes"`
}

// handleWorkloadChange is POST /admin/v1/workloads/change: a watcher (Kubernetes,
// SPIRE) reports a workload's current runtime attributes; when its binding
// fingerprint differs from the one its tokens were issued under, they are revoked.
func (s *adminService) handleWorkloadChange(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.admitCaller(w, r, policy.ActionReportChange)
	if !ok {
		return
	}
	var req changeReport
	if err := decodeJSONBody(r, &req); err != nil {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	}
	b, ok := s.bindings[req.Upstream]
	if !ok || req.Subject == "" {
		writeAdminError(w, &adminError{http.StatusBadRequest, "invalid_request", "upstream must name an upstream with binding_attributes, and subject is required"})
		return
	}
	if !s.permit(w, r, caller, policy.ActionReportChange, []string{req.Upstream}) {
		return
	}
	if s.auditBlocksChange(w, r, policy.ActionReportChange, caller) {
		return
	}
	wl := &attest.Workload{Upstream: req.Upstream, Subject: req.Subject, ID: req.Subject, Attributes: req.Attributes}
	fired, err := s.bind(r.Context(), b, wl, "")
	if err != nil {
		writeAdminError(w, errStoreDown)
		return
	}
	var out json.RawMessage = json.RawMessage(`null`)
	if fired != nil {
		out = entryJSON(*fired)
	}
	if err := s.auditChange(r, policy.ActionReportChange, caller, slog.String("upstream", req.Upstream),
		slog.String("sub", req.Subject), slog.Bool("fired", fired != nil)); err != nil {
		auditLost(w, "the change was recorded")
		return
	}
	writeJSON(w, http.StatusOK, map[string]json.RawMessage{"fired": out})
}

// formValue reads one single-valued parameter of a form body.
func formValue(body, name string) (string, error) {
	form, err := parseFormStrict(body)
	if err != nil {
		return "", err
	}
	v := form[name]
	if len(v) != 1 || v[0] == "" {
		return "", fmt.Errorf("exactly one %s parameter is required", name)
	}
	return v[0], nil
}

func decodeJSONBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return errors.New("the body must be application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("the body is not the expected JSON object")
	}
	return nil
}

// resolveSelector parses a selector and rewrites an iss= term (an upstream's
// issuer) to upstream= (tokens carry upstream).
func (s *adminService) resolveSelector(text string) (revocation.Selector, error) {
	sel, err := revocation.ParseSelector(text)
	if err != nil {
		return revocation.Selector{}, err
	}
	if iss, ok := sel.Value(revocation.KeyIssuer); ok {
		name, known := s.upstreamByIssuer[iss]
		if !known {
			return revocation.Selector{}, fmt.Errorf("iss %q is not a configured upstream's issuer", iss)
		}
		return sel.WithUpstream(name)
	}
	return sel, nil
}

// boundedField cuts a caller's free text to 256 bytes for an audit field.
func boundedField(s string) string {
	if len(s) > 256 {
		s = strings.ToValidUTF8(s[:256], "")
	}
	return s
}

// selectorUpstreams is the upstreams a selector is confined to (exact upstream
// term), or nil when it spans every upstream.
func selectorUpstreams(sel revocation.Selector) []string {
	if u, ok := sel.Value(revocation.KeyUpstream); ok && !strings.Contains(u, "*") {
		return []string{u}
	}
	return nil
}
