package issuer

import (
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/testproc"
)

type keyClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *keyClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *keyClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// keyServer is a Server with only what minting and the JWKS need.
func keyServer(t *testing.T, dir string, clock *keyClock, maxTTL time.Duration) *Server {
	t.Helper()
	ring, err := loadKeyRing(dir, jose.ES256, clock.Now(), defaultKeyOptions)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(Config{Issuer: "https://sts.example", Keys: &SigningKeys{ring: ring}, DefaultTTL: maxTTL, MaxTTL: maxTTL,
		Now: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if s.ring.live == nil {
		t.Fatal("key manager not wired")
	}
	return s
}

func (s *Server) testMint(t *testing.T, ttl time.Duration) (string, error) {
	t.Helper()
	now := s.now()
	tok, kid, err := s.minter.mintKID(&claims{Subject: "w", Audience: []string{"a"}, IssuedAt: now, Expiry: now.Add(ttl), ID: newTokenID(), ClientID: "c"})
	if err == nil && headerKid(t, tok) != kid {
		// The status list records the kid mintKID reports: it must be the signer's.
		t.Fatalf("mintKID reports kid %q, the token's header says %q", kid, headerKid(t, tok))
	}
	return tok, err
}

func getJWKS(t *testing.T, s *Server) (jose.JSONWebKeySet, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PathJWKS, nil))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	return set, rec.Header().Get("Cache-Control")
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func headerKid(t *testing.T, tok string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

func TestActivationFromFileName(t *testing.T) {
	for name, want := range map[string]time.Time{
		"key-20260301T120000Z-abcdefgh.pem": t0,
		"/x/key-20260301T120000Z.pem":       t0,
		"signing.pem":                       {},
		"key-2026.pem":                      {},
		"key-20260301T120000Zjunk.pem":      {},
	} {
		if got := activationOf(name); !got.Equal(want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}

func TestSchedule(t *testing.T) {
	a := &signingKey{kid: "a", alg: jose.ES256, activation: t0}
	b := &signingKey{kid: "b", alg: jose.ES256, activation: t0.Add(time.Hour)}
	r := &signingKey{kid: "r", alg: jose.RS256, activation: t0.Add(10 * time.Minute)}
	keys := []*signingKey{a, r, b}
	retain := 30 * time.Minute
	cases := []struct {
		at        time.Duration
		active    string
		published string
		next      time.Duration
	}{
		{0, "a", "a r b", 10 * time.Minute},
		{59 * time.Minute, "a", "a r b", time.Hour},
		{time.Hour, "b", "a r b", 90 * time.Minute},
		{90*time.Minute - time.Second, "b", "a r b", 90 * time.Minute},
		{90 * time.Minute, "b", "b", 0},
	}
	for _, c := range cases {
		sc := schedule(keys, jose.ES256, t0.Add(c.at), retain)
		var pub []string
		for _, k := range sc.published {
			pub = append(pub, k.kid)
		}
		var next time.Duration
		if !sc.next.IsZero() {
			next = sc.next.Sub(t0)
		}
		if sc.active.kid != c.active || strings.Join(pub, " ") != c.published || next != c.next {
			t.Errorf("at %v: active %s published %v next %v; want %s [%s] %v", c.at, sc.active.kid, pub, next, c.active, c.published, c.next)
		}
	}
	if d := schedule(keys, jose.ES256, t0, retain).dropAt; !d["a"].Equal(t0.Add(90*time.Minute)) || !d["r"].Equal(t0.Add(90*time.Minute)) || !d["b"].IsZero() {
		t.Errorf("dropAt %v", d)
	}
	if sc := schedule([]*signingKey{b}, jose.ES256, t0, retain); sc.active != nil || len(sc.published) != 1 {
		t.Errorf("a key not yet active signed or was not published: %+v", sc)
	}
}

func TestRotateKeyWritesStagedKey(t *testing.T) {
	dir := t.TempDir()
	first, err := generateKey(dir, jose.ES256, t0)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Hour + 500*time.Millisecond)
	res, err := RotateKey(dir, jose.ES256, now, false)
	if err != nil {
		t.Fatal(err)
	}
	want := t0.Add(time.Hour + 2*JWKSCacheLifetime + time.Second)
	if res.Previous != first.kid || !res.ActivateAt.Equal(want) || len(res.Removed) != 0 {
		t.Fatalf("%+v, want activation %v", res, want)
	}
	st, err := os.Stat(res.File)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || filepath.Base(res.File) != "key-"+want.Format(keyTimeLayout)+"-"+res.KeyID[:8]+".pem" {
		t.Fatalf("%s mode %v", res.File, st.Mode())
	}
	k, err := readKey(res.File, jose.ES256)
	if err != nil || k.kid != res.KeyID || !k.activation.Equal(want) {
		t.Fatalf("%+v %v", k, err)
	}
}

// TestReloadOnFileChange: a key written to key_dir is published at the next reload
// without a restart, signs at its activation, and a removed file leaves the JWKS.
func TestReloadOnFileChange(t *testing.T) {
	dir := t.TempDir()
	clock := &keyClock{t: t0}
	s := keyServer(t, dir, clock, 10*time.Minute)
	old := s.ring.active.kid
	res, err := RotateKey(dir, jose.ES256, clock.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if set, _ := getJWKS(t, s); len(set.Keys) != 1 {
		t.Fatalf("reloaded before the interval: %v", kids(set))
	}
	clock.Add(KeyReloadInterval)
	if set, _ := getJWKS(t, s); strings.Join(kids(set), " ") != old+" "+res.KeyID {
		t.Fatalf("after reload: %v", kids(set))
	}
	if tok, err := s.testMint(t, time.Minute); err != nil || headerKid(t, tok) != old {
		t.Fatalf("staged key signed early: %v", err)
	}
	clock.t = res.ActivateAt
	tok, err := s.testMint(t, time.Minute)
	if err != nil || headerKid(t, tok) != res.KeyID {
		t.Fatalf("new key not signing at activation: %v", err)
	}
	if err := os.Remove(res.File); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if set, _ := getJWKS(t, s); strings.Join(kids(set), " ") != old {
		t.Fatalf("removed key still published: %v", kids(set))
	}
}

func TestEmergencyRotation(t *testing.T) {
	dir := t.TempDir()
	clock := &keyClock{t: t0}
	s := keyServer(t, dir, clock, 10*time.Minute)
	old := s.ring.active
	clock.Add(time.Hour)
	res, err := RotateKey(dir, jose.ES256, clock.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Previous != old.kid || len(res.Removed) != 1 || res.Removed[0] != old.file || !res.ActivateAt.Equal(clock.Now()) {
		t.Fatalf("%+v", res)
	}
	if _, err := os.Stat(old.file); !os.IsNotExist(err) {
		t.Fatalf("old key file kept: %v", err)
	}
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if set, _ := getJWKS(t, s); strings.Join(kids(set), " ") != res.KeyID {
		t.Fatalf("JWKS after emergency rotation: %v", kids(set))
	}
	if tok, err := s.testMint(t, time.Minute); err != nil || headerKid(t, tok) != res.KeyID {
		t.Fatalf("signing after emergency rotation: %v", err)
	}
}

// TestKeyRotationAudited: a change of the signing key is one audit event naming
// the previous and the new kid.
func TestKeyRotationAudited(t *testing.T) {
	dir := t.TempDir()
	clock := &keyClock{t: t0}
	s := keyServer(t, dir, clock, 10*time.Minute)
	var buf testproc.Buffer
	s.auditLog = slog.New(slog.NewJSONHandler(&buf, nil))
	old := s.ring.active
	clock.Add(time.Hour)
	res, err := RotateKey(dir, jose.ES256, clock.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	want := `"event":"key_rotation","previous_kid":"` + old.kid + `","kid":"` + res.KeyID + `"`
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("audit log lacks %s:\n%s", want, buf.String())
	}
}

// TestTokenNeverOutlivesKey: minting refuses a token expiring after its key leaves
// the JWKS.
func TestTokenNeverOutlivesKey(t *testing.T) {
	dir := t.TempDir()
	clock := &keyClock{t: t0}
	s := keyServer(t, dir, clock, 10*time.Minute)
	if _, err := s.testMint(t, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	// A successor activating in one minute: the current key leaves the JWKS at
	// t0 + 1m + max_ttl + skew.
	if _, err := generateKey(dir, jose.ES256, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.testMint(t, 10*time.Minute); err != nil {
		t.Fatalf("max_ttl token refused: %v", err)
	}
	if _, err := s.testMint(t, 13*time.Minute); err == nil {
		t.Fatal("a token outliving its key was minted")
	}
}

// TestRotationNoLiveTokenRejected simulates a verifier that refreshes the JWKS at
// the advertised cache lifetime and a minter issuing max_ttl tokens every few
// seconds across two staged rotations: no live token is ever signed by a kid the
// verifier's cached JWKS lacks, and every token verifies.
func TestRotationNoLiveTokenRejected(t *testing.T) {
	dir := t.TempDir()
	clock := &keyClock{t: t0}
	const maxTTL = 15 * time.Minute
	s := keyServer(t, dir, clock, maxTTL)

	var cached jose.JSONWebKeySet
	var fetched time.Time
	refresh := func() {
		set, cc := getJWKS(t, s)
		if cc != "public, max-age=300" {
			t.Fatalf("Cache-Control %q", cc)
		}
		cached, fetched = set, clock.Now()
	}
	refresh()
	type token struct {
		raw, kid string
		exp      time.Time
		verified bool
	}
	var live []token
	signers := map[string]bool{}
	rotations := map[time.Duration]bool{20 * time.Minute: true, 70 * time.Minute: true}
	const step = 3 * time.Second
	checked := 0
	for el := time.Duration(0); el < 3*time.Hour; el += step {
		if rotations[el] {
			if _, err := RotateKey(dir, jose.ES256, clock.Now(), false); err != nil {
				t.Fatal(err)
			}
		}
		if clock.Now().Sub(fetched) >= JWKSCacheLifetime {
			refresh()
		}
		tok, err := s.testMint(t, maxTTL)
		if err != nil {
			t.Fatalf("at %v: %v", el, err)
		}
		kid := headerKid(t, tok)
		signers[kid] = true
		live = append(live, token{raw: tok, kid: kid, exp: clock.Now().Add(maxTTL)})
		kept := live[:0]
		for _, tk := range live {
			if !clock.Now().Before(tk.exp) {
				continue
			}
			keys := cached.Key(tk.kid)
			if len(keys) != 1 {
				t.Fatalf("at %v: live token signed by %s, verifier's JWKS (fetched %v ago) has %v", el, tk.kid, clock.Now().Sub(fetched), kids(cached))
			}
			if !tk.verified {
				jws, _ := jose.ParseSignedCompact(tk.raw, []jose.SignatureAlgorithm{jose.ES256})
				if _, err := jws.Verify(keys[0].Key); err != nil {
					t.Fatalf("at %v: %v", el, err)
				}
				tk.verified = true
			}
			kept = append(kept, tk)
			checked++
		}
		live = kept
		clock.Add(step)
	}
	if len(signers) != 3 {
		t.Fatalf("signing keys used: %v, want 3", signers)
	}
	// The first key was superseded at ~30m and dropped by ~30m+max_ttl+skew.
	if set, _ := getJWKS(t, s); len(set.Keys) != 1 {
		t.Fatalf("retired keys still published at the end: %v", kids(set))
	}
	t.Logf("%d live-token checks", checked)
}

// TestRSABits: signing.rsa_bits decides the size of the RSA keys the STS and a
// rotation generate; sizes outside RSAKeySizes are refused.
func TestRSABits(t *testing.T) {
	for _, bits := range RSAKeySizes {
		for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.PS256} {
			dir := t.TempDir()
			keys, err := OpenKeyDir(dir, alg, time.Now(), WithRSABits(bits))
			if err != nil {
				t.Fatal(err)
			}
			pub, ok := keys.ring.active.Public().(*rsa.PublicKey)
			if !ok || pub.N.BitLen() != bits || keys.ring.active.alg != alg {
				t.Fatalf("%s %d: got %T alg %s", alg, bits, keys.ring.active.Public(), keys.ring.active.alg)
			}
			res, err := RotateKey(dir, alg, time.Now(), false, WithRSABits(bits))
			if err != nil {
				t.Fatal(err)
			}
			k, err := readKey(res.File, alg)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Public().(*rsa.PublicKey).N.BitLen(); got != bits {
				t.Fatalf("rotated %s key has %d bits, want %d", alg, got, bits)
			}
		}
	}
	// No option: the default size.
	keys, err := OpenKeyDir(t.TempDir(), jose.RS256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := keys.ring.active.Public().(*rsa.PublicKey).N.BitLen(); got != DefaultRSABits {
		t.Fatalf("default RSA size %d, want %d", got, DefaultRSABits)
	}
	for _, bad := range []int{1024, 2047, 8192} {
		dir := t.TempDir()
		if _, err := OpenKeyDir(dir, jose.RS256, time.Now(), WithRSABits(bad)); err == nil || !strings.Contains(err.Error(), "RSA key size") {
			t.Fatalf("%d bits: %v", bad, err)
		}
		if _, err := RotateKey(dir, jose.RS256, time.Now(), false, WithRSABits(bad)); err == nil || !strings.Contains(err.Error(), "RSA key size") {
			t.Fatalf("rotate %d bits: %v", bad, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("%d bits left %d files", bad, len(entries))
		}
	}
}
