//go:build cgo

package issuer

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/testhsm"
)

// openTestToken creates a SoftHSM2 token and opens it as the STS does.
func openTestToken(t *testing.T) (*testhsm.Token, *PKCS11Token) {
	t.Helper()
	th := testhsm.New(t, "sts")
	tok, err := OpenPKCS11(PKCS11Config{Module: th.Module, TokenLabel: th.Label, KeyLabel: "sts-signing", PINFile: th.PINFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return th, tok
}

// keyFiles lists the key files (*.pem) and references (*.pkcs11) in dir.
func keyFiles(t *testing.T, dir string) (pems, refs []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".pem":
			pems = append(pems, e.Name())
		case pkcs11RefExt:
			refs = append(refs, e.Name())
		}
	}
	return pems, refs
}

// verifyMinted mints a token with ring's active key and verifies it against the
// public key the ring's JWKS publishes under the token's kid.
func verifyMinted(t *testing.T, ring *keyRing) string {
	t.Helper()
	m, err := newMinter("https://sts.example", ring.active)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raw, err := m.mint(&claims{Subject: "spiffe://example.org/a", Audience: []string{"https://b"}, IssuedAt: now, Expiry: now.Add(time.Minute), ID: newTokenID()})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(ring.jwks, &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{ring.alg})
	if err != nil {
		t.Fatal(err)
	}
	kid := jws.Signatures[0].Header.KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %s is published %d times in %s", kid, len(keys), ring.jwks)
	}
	if _, err := jws.Verify(keys[0].Key); err != nil {
		t.Fatalf("a token signed in the token does not verify against the JWKS: %v", err)
	}
	return kid
}

// TestPKCS11SignRotate: with signing.pkcs11, the first key is generated in the
// token (key_dir gets a reference, no private key), it is sensitive and not
// extractable, tokens it signs verify against the JWKS, and a staged then an
// emergency rotation keep the key_dir schedule and kid registry, for every
// algorithm a token can hold.
func TestPKCS11SignRotate(t *testing.T) {
	_, tok := openTestToken(t)
	h := tok.hsm.(*crypto11HSM)
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256} {
		t.Run(string(alg), func(t *testing.T) {
			dir := t.TempDir()
			t0 := time.Now().Add(-time.Hour)
			// One token, a key label per algorithm (the first key of a label is
			// adopted, whatever its type).
			tk := &PKCS11Token{cfg: tok.cfg, hsm: tok.hsm, keys: map[string]*signingKey{}}
			tk.cfg.KeyLabel = "sts-" + string(alg)
			o := keyOptions{rsaBits: 2048, token: tk}
			ring, err := loadKeyRing(dir, alg, t0, o)
			if err != nil {
				t.Fatal(err)
			}
			pems, refs := keyFiles(t, dir)
			if len(pems) != 0 || len(refs) != 1 {
				t.Fatalf("key_dir holds %v %v, want one reference and no key file", pems, refs)
			}
			switch ring.active.signer.(pssHashSalt).Signer.(type) {
			case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
				t.Fatalf("the private key is in memory (%T)", ring.active.signer)
			}
			if ring.active.alg != alg {
				t.Fatalf("alg %s", ring.active.alg)
			}
			if pub, ok := ring.active.Public().(*rsa.PublicKey); ok && pub.N.BitLen() != 2048 {
				t.Fatalf("RSA key of %d bits, want rsa_bits 2048", pub.N.BitLen())
			}
			for attr, want := range map[crypto11.AttributeType]byte{crypto11.CkaExtractable: 0, crypto11.CkaSensitive: 1, crypto11.CkaNeverExtractable: 1} {
				a, err := h.ctx.GetAttribute(ring.active.signer.(pssHashSalt).Signer, attr)
				if err != nil || len(a.Value) != 1 || a.Value[0] != want {
					t.Fatalf("attribute %#x of the token key: %v %v, want %d", attr, a, err, want)
				}
			}
			first := verifyMinted(t, ring)
			if first != ring.active.kid {
				t.Fatalf("signed by %s, want %s", first, ring.active.kid)
			}
			if data, _ := os.ReadFile(filepath.Join(dir, refs[0])); strings.Contains(string(data), "PRIVATE") || !strings.Contains(string(data), "kid: "+first) {
				t.Fatalf("reference file:\n%s", data)
			}

			// Staged: the new key is published at once, signs from its activation.
			now := time.Now()
			res, err := RotateKey(dir, alg, now, false, WithRSABits(2048), WithPKCS11(tk))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(res.File, pkcs11RefExt) || res.Previous != first {
				t.Fatalf("rotation %+v", res)
			}
			keys, err := readKeysWith(dir, alg, tk)
			if err != nil {
				t.Fatal(err)
			}
			ring, err = computeRing(keys, alg, now, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if ring.active.kid != first || !slices.Equal(keyIDs(ring.keys), []string{first, res.KeyID}) {
				t.Fatalf("after a staged rotation: active %s, published %v", ring.active.kid, keyIDs(ring.keys))
			}
			ring, err = computeRing(keys, alg, res.ActivateAt, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if ring.active.kid != res.KeyID || verifyMinted(t, ring) != res.KeyID {
				t.Fatalf("at its activation the staged key does not sign")
			}
			list, err := ListKeys(dir, alg, time.Hour, now, WithPKCS11(tk))
			if err != nil || len(list) != 2 || list[1].State != "staged" {
				t.Fatalf("keys list: %+v %v", list, err)
			}

			// Emergency: the reference of the key signing now is removed, its kid
			// stays in the registry (revocable).
			em, err := RotateKey(dir, alg, now, true, WithRSABits(2048), WithPKCS11(tk))
			if err != nil {
				t.Fatal(err)
			}
			if em.Previous != first || len(em.Removed) != 1 {
				t.Fatalf("emergency rotation %+v", em)
			}
			known, err := readKidsFile(dir)
			if err != nil || known[first] == "" || known[em.KeyID] == "" {
				t.Fatalf("kid registry %v %v", known, err)
			}
			keys, err = readKeysWith(dir, alg, tk)
			if err != nil {
				t.Fatal(err)
			}
			ring, err = computeRing(keys, alg, now, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if ring.active.kid != em.KeyID || slices.Contains(keyIDs(ring.keys), first) {
				t.Fatalf("after the emergency rotation: active %s, published %v", ring.active.kid, keyIDs(ring.keys))
			}
		})
	}
}

// TestPKCS11AdoptsProvisionedKey: a key made beforehand with pkcs11-tool under
// key_label is the one the STS signs with; its CKA_ID goes in the reference.
func TestPKCS11AdoptsProvisionedKey(t *testing.T) {
	th, tok := openTestToken(t)
	// The module was initialised before the key was made; SoftHSM2 sees objects
	// other processes add to the token directory.
	th.Tool(t, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "sts-signing", "--id", "a1b2")
	dir := t.TempDir()
	keys, err := OpenKeyDir(dir, jose.ES256, time.Now(), WithPKCS11(tok))
	if err != nil {
		t.Fatal(err)
	}
	_, refs := keyFiles(t, dir)
	if len(refs) != 1 {
		t.Fatalf("references %v", refs)
	}
	ref, err := readPKCS11Ref(filepath.Join(dir, refs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if ref.label != "sts-signing" || string(ref.id) != "\xa1\xb2" || ref.kid != keys.ring.active.kid {
		t.Fatalf("reference %+v", ref)
	}
	verifyMinted(t, keys.ring)
}

// TestPKCS11Refusals: what a token key setup refuses, with the reason (a wrong
// PIN is checked by the end-to-end test, in a process not yet logged in).
func TestPKCS11Refusals(t *testing.T) {
	th, tok := openTestToken(t)
	dir := t.TempDir()
	if _, err := OpenKeyDir(dir, jose.ES256, time.Now(), WithPKCS11(tok)); err != nil {
		t.Fatal(err)
	}
	_, refs := keyFiles(t, dir)
	refPath := filepath.Join(dir, refs[0])
	good, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	// A reference read without a token configured.
	if _, err := readKeys(dir, jose.ES256); err == nil || !strings.Contains(err.Error(), "signing.pkcs11 is not configured") {
		t.Fatalf("reference without a token: %v", err)
	}
	for name, tc := range map[string]struct{ from, to, want string }{
		"kid mismatch":   {"kid: ", "kid: x", "not the kid"},
		"other token":    {"token: sts", "token: other", `in token "other"`},
		"no such key":    {"key_id: ", "key_id: ff", "has no key pair"},
		"missing field":  {"kid: ", "kyd: ", "unknown field"},
		"not hex key_id": {"key_id: ", "key_id: zz", "key_id must be hex"},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, filepath.Base(refPath))
			if err := os.WriteFile(p, []byte(strings.Replace(string(good), tc.from, tc.to, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := readKeysWith(d, jose.ES256, tok); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// EdDSA cannot live in a token.
	if _, err := OpenKeyDir(t.TempDir(), jose.EdDSA, time.Now(), WithPKCS11(tok)); err == nil || !strings.Contains(err.Error(), "EdDSA") {
		t.Fatalf("EdDSA in a token: %v", err)
	}
	// The PIN file is checked like a key file, and a wrong PIN is refused.
	cfg := PKCS11Config{Module: th.Module, TokenLabel: th.Label, KeyLabel: "k", PINFile: th.PINFile}
	if err := os.Chmod(th.PINFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPKCS11(cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("PIN file 0644: %v", err)
	}
	if err := os.Chmod(th.PINFile, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.TokenLabel = "absent"
	if _, err := OpenPKCS11(cfg); err == nil || !strings.Contains(err.Error(), "signing.pkcs11") {
		t.Fatalf("absent token: %v", err)
	}
}

// BenchmarkMintPKCS11 is BenchmarkMint with the key in a SoftHSM2 token (a
// software token in the same process: a network HSM adds its round trip).
func BenchmarkMintPKCS11(b *testing.B) {
	th := testhsm.New(b, "bench")
	tok, err := OpenPKCS11(PKCS11Config{Module: th.Module, TokenLabel: th.Label, KeyLabel: "bench", PINFile: th.PINFile})
	if err != nil {
		b.Fatal(err)
	}
	defer tok.Close()
	for _, tc := range []struct {
		name string
		alg  jose.SignatureAlgorithm
		bits int
	}{{"ES256", jose.ES256, 0}, {"RS256-2048", jose.RS256, 2048}, {"RS256-3072", jose.RS256, 3072}} {
		b.Run(tc.name, func(b *testing.B) {
			tk := &PKCS11Token{cfg: tok.cfg, hsm: tok.hsm, keys: map[string]*signingKey{}}
			tk.cfg.KeyLabel = "bench-" + tc.name
			ring, err := loadKeyRing(b.TempDir(), tc.alg, time.Now(), keyOptions{rsaBits: max(tc.bits, 2048), token: tk})
			if err != nil {
				b.Fatal(err)
			}
			m, err := newMinter("https://sts.example", ring.active)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			c := &claims{Subject: "system:serviceaccount:payments:api", Audience: []string{"https://ledger.internal"},
				IssuedAt: now, Expiry: now.Add(5 * time.Minute), Scopes: []string{"ledger.read"}, Upstream: "cluster-a"}
			for b.Loop() {
				c.ID = newTokenID()
				if _, err := m.mint(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
