package issuer

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/verify"
)

const (
	keyAdmin   = "system:serviceaccount:secops:keys"
	keyAuditor = "system:serviceaccount:secops:auditor"
)

// keyRevokePolicy lets keyAdmin rotate keys (and revoke, introspect, read the
// feed), and keyAuditor only introspect and read the feed.
const keyRevokePolicy = testPolicy + `admin:
  - name: key-admins
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:secops:keys"]
    actions: [rotate_keys, revoke, block, introspect, read_feed]
    within_upstreams: ["*"]
  - name: auditors
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:secops:auditor"]
    actions: [introspect, read_feed]
    within_upstreams: ["*"]
`

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func (ts *testSTS) exchange(t *testing.T) string {
	t.Helper()
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	return r.body["access_token"].(string)
}

func (ts *testSTS) revokeKey(t *testing.T, admin, kid string) *reply {
	t.Helper()
	return ts.do(t, http.MethodPost, PathAdminKeyRevoke, "application/json",
		string(mustJSON(map[string]string{"kid": kid, "reason": "key compromised"})), bearer(admin))
}

// introspectActive reports introspection's "active" for tok.
func (ts *testSTS) introspectActive(t *testing.T, admin, tok string) bool {
	t.Helper()
	r := ts.do(t, http.MethodPost, PathIntrospect, "application/x-www-form-urlencoded", url.Values{"token": {tok}}.Encode(), bearer(admin))
	if r.status != 200 {
		t.Fatalf("introspect: %d %s", r.status, r.raw)
	}
	active, _ := r.body["active"].(bool)
	return active
}

// TestRevokeKeyByKID: the admin endpoint refuses the signing key (409), accepts a
// retired one; then introspection and the verify library (revocation-aware)
// refuse every token of the old key, including one forged with it after the
// revoke, while the new key's tokens stay valid. An emergency rotation written to
// key_dir just before the call is seen without waiting for the periodic reload.
func TestRevokeKeyByKID(t *testing.T) {
	ts := startSTS(t, stsOptions{policy: keyRevokePolicy})
	admin, auditor := ts.a.Token(t, keyAdmin), ts.a.Token(t, keyAuditor)
	keyDir := filepath.Join(ts.dir, "keys")
	oldKid := ts.srv.ActiveKeyID()
	oldTok := ts.exchange(t)

	// Refusals: the signing key (409), no credential (401), no rotate_keys (403),
	// bad bodies (400); nothing is recorded.
	if r := ts.revokeKey(t, admin, oldKid); r.status != http.StatusConflict || r.body["error"] != "key_in_use" ||
		!strings.Contains(r.raw, "rotate first") {
		t.Fatalf("revoking the signing key: %d %s", r.status, r.raw)
	}
	for _, body := range []string{`{"kid":"x","reason":"r"}`, `{"reason":"r"}`, `kid=k`} { // authentication first
		if r := ts.do(t, http.MethodPost, PathAdminKeyRevoke, "application/json", body, nil); r.status != http.StatusUnauthorized {
			t.Errorf("without a credential, body %s: %d %s", body, r.status, r.raw)
		}
	}
	if r := ts.revokeKey(t, auditor, "retired-kid"); r.status != http.StatusForbidden {
		t.Errorf("without rotate_keys: %d %s", r.status, r.raw)
	}
	for _, body := range []string{`{"reason":"r"}`, `{"kid":"k"}`, `{"kid":"k*","reason":"r"}`, `{"kid":"k","reason":"r","for":"1h"}`, `kid=k`} {
		if r := ts.do(t, http.MethodPost, PathAdminKeyRevoke, "application/json", body, bearer(admin)); r.status != http.StatusBadRequest {
			t.Errorf("body %s: %d %s", body, r.status, r.raw)
		}
	}
	// The generic endpoint applies the same rule to a kid term, and refuses a block
	// by kid.
	for body, want := range map[string]int{
		`{"selector":"kid=` + oldKid + `","reason":"r"}`:                    http.StatusConflict,
		`{"selector":"kid=` + oldKid + `,upstream=cluster-a","reason":"r"}`: http.StatusConflict,
		`{"selector":"kid=retired","kind":"block","reason":"r"}`:            http.StatusBadRequest,
	} {
		if r := ts.do(t, http.MethodPost, PathAdmin+"revocations", "application/json", body, bearer(admin)); r.status != want {
			t.Errorf("POST revocations %s: %d %s, want %d", body, r.status, r.raw, want)
		}
	}
	if list, err := ts.srv.store.List(t.Context(), true); err != nil || len(list) != 0 {
		t.Fatalf("refused requests recorded entries: %v, %v", list, err)
	}

	// A staged key (published, not yet signing) is refused too.
	staged, err := generateKey(keyDir, jose.ES256, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r := ts.revokeKey(t, admin, staged.kid); r.status != http.StatusConflict || !strings.Contains(r.raw, "staged") {
		t.Fatalf("revoking a staged key: %d %s", r.status, r.raw)
	}
	if err := os.Remove(staged.file); err != nil {
		t.Fatal(err)
	}

	// Rotate: a new key activating at the next second; the old one is retired but
	// stays published, so its tokens still verify by signature.
	at := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(at))
	next, err := generateKey(keyDir, jose.ES256, at)
	if err != nil {
		t.Fatal(err)
	}
	if !ts.introspectActive(t, admin, oldTok) {
		t.Fatal("the old key's token is inactive before any revoke")
	}
	// No explicit reload: the endpoint re-reads key_dir.
	r := ts.revokeKey(t, admin, oldKid)
	if r.status != http.StatusCreated || r.body["selector"] != "kid="+oldKid || r.body["kind"] != "revoke" ||
		r.body["reason"] != "key compromised" || r.body["actor"] != "cluster-a:"+keyAdmin {
		t.Fatalf("revoking the retired key: %d %s", r.status, r.raw)
	}
	created := time.UnixMilli(int64(r.body["created"].(float64)))
	// It lasts until the key has left the JWKS (its successor's activation + max_ttl
	// + skew) and verifiers' copies of the JWKS have expired.
	if exp := time.UnixMilli(int64(r.body["expires"].(float64))); exp.Before(at.Add(time.Hour + keyRetireSkew + JWKSCacheLifetime)) {
		t.Errorf("the entry expires at %v, before the retired key leaves verifiers' JWKS", exp)
	}
	if ts.srv.ActiveKeyID() != next.kid {
		t.Fatalf("signing with %s, want the new key %s", ts.srv.ActiveKeyID(), next.kid)
	}
	audit := ts.audit.String()
	for _, want := range []string{`"event":"rotate_keys","outcome":"recorded"`, `"op":"revoke_key","kid":"` + oldKid + `"`, `"outcome":"refused"`, `"outcome":"denied"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}

	newTok := ts.exchange(t)
	if headerKid(t, newTok) != next.kid {
		t.Fatalf("new token signed by %s, want %s", headerKid(t, newTok), next.kid)
	}
	// A token forged with the old key after the revoke, with a later iat.
	for time.Now().Unix() <= created.Unix() {
		time.Sleep(50 * time.Millisecond)
	}
	forged := forgeWithKey(t, ts, keyDir, oldKid)

	// Introspection: the old key's tokens are inactive, whatever their iat.
	if ts.introspectActive(t, admin, oldTok) {
		t.Error("introspection: a token of the revoked key is active")
	}
	if ts.introspectActive(t, admin, forged) {
		t.Error("introspection: a token forged with the revoked key after the revoke is active")
	}
	if !ts.introspectActive(t, admin, newTok) {
		t.Error("introspection: a token of the new key is inactive")
	}

	// The verify library with the revocation feed.
	v, err := verify.New(t.Context(), verify.Config{
		Issuer: ts.url, Audience: ledger, HTTPClient: ts.client, RequireFeed: true,
		FeedToken: func(context.Context) (string, error) { return admin, nil },
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := v.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"old key": oldTok, "forged with the old key": forged} {
		if _, err := v.Verify(t.Context(), tok); !errors.Is(err, verify.ErrRevoked) {
			t.Errorf("verify, %s: %v, want ErrRevoked", name, err)
		}
	}
	if tok, err := v.Verify(t.Context(), newTok); err != nil || tok.KeyID != next.kid {
		t.Errorf("verify, new key: %+v, %v", tok, err)
	}

	// Emergency rotation written just before the call: the endpoint sees it (no
	// 409 while the periodic reload has not run), and tokens of the replaced key
	// are revoked.
	res, err := RotateKey(keyDir, jose.ES256, time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Previous != next.kid {
		t.Fatalf("emergency rotation replaced %s, want %s", res.Previous, next.kid)
	}
	if r := ts.revokeKey(t, admin, res.Previous); r.status != http.StatusCreated || r.body["selector"] != "kid="+next.kid {
		t.Fatalf("revoking the key an emergency rotation replaced: %d %s", r.status, r.raw)
	}
	if ts.srv.ActiveKeyID() != res.KeyID {
		t.Fatalf("signing with %s after the emergency rotation, want %s", ts.srv.ActiveKeyID(), res.KeyID)
	}
	if ts.introspectActive(t, admin, newTok) {
		t.Error("introspection: a token of the key replaced in an emergency is active")
	}
	if tok := ts.exchange(t); !ts.introspectActive(t, admin, tok) {
		t.Error("introspection: a token of the emergency key is inactive")
	}
}

// forgeWithKey mints a token as the STS would, but with the key kid read from
// keyDir and iat now: what someone holding a stolen key can do.
func forgeWithKey(t *testing.T, ts *testSTS, keyDir, kid string) string {
	t.Helper()
	keys, err := readKeys(keyDir, jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.kid != kid {
			continue
		}
		m, err := newMinter(ts.url, k)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		tok, err := m.mint(&claims{Subject: payments, Audience: []string{ledger}, IssuedAt: now, Expiry: now.Add(5 * time.Minute),
			ID: newTokenID(), ClientID: payments, Upstream: "cluster-a", Scopes: []string{"ledger.read"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t.Fatalf("no key %s in %s", kid, keyDir)
	return ""
}

// TestRevokeKeyUnknownKid: a revoke by kid must name a key this STS has had in
// key_dir: an unknown kid and a truncated one (a key file name shows 8
// characters) are refused with 404 and a hint, instead of a 201 that revokes
// nothing; the signing key is still 409; a retired key whose file was deleted
// stays revocable, also after a restart (key_dir/kids remembers it).
func TestRevokeKeyUnknownKid(t *testing.T) {
	dir := t.TempDir()
	ts := startSTS(t, stsOptions{policy: keyRevokePolicy, dir: dir})
	admin := ts.a.Token(t, keyAdmin)
	keyDir := filepath.Join(dir, "keys")
	oldKid := ts.srv.ActiveKeyID()
	const unknown = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

	for kid, want := range map[string]string{unknown: "stsctl keys list", oldKid[:8]: "looks truncated: it is the start of " + oldKid} {
		r := ts.revokeKey(t, admin, kid)
		if r.status != http.StatusNotFound || r.body["error"] != "unknown_kid" || !strings.Contains(r.raw, want) {
			t.Errorf("revoking kid %s: %d %s, want 404 unknown_kid with %q", kid, r.status, r.raw, want)
		}
		r = ts.do(t, http.MethodPost, PathAdmin+"revocations", "application/json", `{"selector":"kid=`+kid+`","reason":"r"}`, bearer(admin))
		if r.status != http.StatusNotFound || r.body["error"] != "unknown_kid" {
			t.Errorf("POST revocations kid=%s: %d %s, want 404 unknown_kid", kid, r.status, r.raw)
		}
	}
	if r := ts.revokeKey(t, admin, oldKid); r.status != http.StatusConflict || r.body["error"] != "key_in_use" {
		t.Errorf("revoking the signing key: %d %s", r.status, r.raw)
	}
	if list, err := ts.srv.store.List(t.Context(), true); err != nil || len(list) != 0 {
		t.Fatalf("refused requests recorded entries: %v, %v", list, err)
	}
	if !strings.Contains(ts.audit.String(), `"outcome":"refused"`) {
		t.Errorf("refusals not audited:\n%s", ts.audit)
	}

	// Rotate, then delete the retired key's file: its kid stays revocable.
	at := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(at))
	next, err := generateKey(keyDir, jose.ES256, at)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	old, err := filepath.Glob(filepath.Join(keyDir, "key-*-"+oldKid[:8]+".pem"))
	if err != nil || len(old) != 1 {
		t.Fatalf("the old key file: %v %v", old, err)
	}
	if err := os.Remove(old[0]); err != nil {
		t.Fatal(err)
	}
	if r := ts.revokeKey(t, admin, oldKid); r.status != http.StatusCreated || r.body["selector"] != "kid="+oldKid {
		t.Fatalf("revoking the removed key: %d %s", r.status, r.raw)
	}

	// A restart forgets nothing: the old key's file is gone, key_dir/kids lists it.
	ts.srv.Close()
	ts = startSTS(t, stsOptions{policy: keyRevokePolicy, dir: dir})
	admin = ts.a.Token(t, keyAdmin) // a new upstream too
	if ts.srv.ActiveKeyID() != next.kid {
		t.Fatalf("signing with %s after the restart, want %s", ts.srv.ActiveKeyID(), next.kid)
	}
	if r := ts.revokeKey(t, admin, oldKid); r.status != http.StatusCreated {
		t.Fatalf("revoking the removed key after a restart: %d %s", r.status, r.raw)
	}
	if r := ts.revokeKey(t, admin, unknown); r.status != http.StatusNotFound {
		t.Errorf("an unknown kid after a restart: %d %s", r.status, r.raw)
	}
}
