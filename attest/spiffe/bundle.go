package spiffe

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
	"github.com/safeconduct/safeconduct/internal/fetch"
	"github.com/safeconduct/safeconduct/internal/jwtcore"
)

// maxAuthorities bounds the authorities of each kind in one bundle. RSA sizes are
// jwtcore's.
const maxAuthorities = 100

// jwtKey is one vetted JWT authority.
type jwtKey struct {
	kind jwtcore.KeyType // never Ed25519
	pub  crypto.PublicKey
}

// fits reports whether the key may verify a JWT-SVID signed with alg.
func (k *jwtKey) fits(alg string) bool { return k.kind.Fits(alg) }

// snapshot is an immutable, vetted view of the trust domain's bundle, swapped whole
// on update.
type snapshot struct {
	// jwt maps key IDs to JWT authorities; nil when no JWT bundle was received yet
	// (Workload API), empty when the bundle has none.
	jwt map[string]*jwtKey
	// x509 holds the X.509 authorities; nil when none were received yet (Workload
	// API).
	x509 *x509bundle.Bundle
	// refreshHint and sequence are the bundle's, when it has them.
	refreshHint time.Duration
	sequence    *uint64
}

// GetX509BundleForTrustDomain makes a snapshot an x509bundle.Source of its own
// trust domain only.
func (s *snapshot) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if s.x509 == nil || td != s.x509.TrustDomain() {
		return nil, fmt.Errorf("no X.509 bundle for trust domain %q", td)
	}
	return s.x509, nil
}

// describe summarizes a snapshot for logs.
func (s *snapshot) describe() []any {
	out := []any{"jwt_authorities", len(s.jwt), "x509_authorities", 0}
	if s.x509 != nil {
		out[3] = len(s.x509.X509Authorities())
	}
	if s.sequence != nil {
		out = append(out, "sequence", *s.sequence)
	}
	return out
}

// sameAuthorities reports whether a and b trust the same keys.
func sameAuthorities(a, b *snapshot) bool {
	if a == nil || b == nil || (a.x509 == nil) != (b.x509 == nil) || (a.jwt == nil) != (b.jwt == nil) {
		return false
	}
	if a.x509 != nil && !a.x509.Equal(b.x509) {
		return false
	}
	return maps.EqualFunc(a.jwt, b.jwt, func(x, y *jwtKey) bool {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		e, ok := x.pub.(equaler)
		return ok && e.Equal(y.pub)
	})
}

// readBundleFile reads and parses a SPIFFE bundle file of td, at most maxBytes.
func readBundleFile(td spiffeid.TrustDomain, path string, maxBytes int64) (*spiffebundle.Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := fetch.ReadAll(f, maxBytes)
	if err != nil {
		return nil, err
	}
	return parseBundle(td, data)
}

// parseBundle parses a SPIFFE bundle document (SPIFFE Trust Domain and Bundle §4)
// for td. Beyond spiffebundle.Parse, it refuses duplicate JSON member names and
// duplicate jwt-svid key IDs, which spiffebundle would resolve silently.
func parseBundle(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if err := strictjson.CheckObject(data, 8); err != nil {
		return nil, err
	}
	var doc struct {
		Keys []struct {
			Use string `json:"use"`
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	kids := make(map[string]bool)
	for _, k := range doc.Keys {
		if k.Use != "jwt-svid" {
			continue
		}
		if kids[k.Kid] {
			return nil, fmt.Errorf("duplicate jwt-svid kid %.64q", k.Kid)
		}
		kids[k.Kid] = true
	}
	return spiffebundle.Parse(td, data)
}

// vet builds a snapshot of td's authorities, refusing what must not be trusted:
// JWT authorities that are not RSA (2048 to 8192 bits) or ECDSA P-256/384/521
// public keys (private key material included), X.509 authorities that name another
// trust domain in a SPIFFE URI SAN, and more than maxAuthorities of either kind.
// jwt or x509 may be nil (not received yet); vet never returns an empty bundle:
// a bundle with no authority at all is refused.
func vet(td spiffeid.TrustDomain, jwt *jwtbundle.Bundle, x509b *x509bundle.Bundle) (*snapshot, error) {
	s := &snapshot{}
	if jwt != nil {
		if jwt.TrustDomain() != td {
			return nil, fmt.Errorf("JWT bundle of trust domain %q", jwt.TrustDomain())
		}
		auth := jwt.JWTAuthorities()
		if len(auth) > maxAuthorities {
			return nil, fmt.Errorf("more than %d JWT authorities", maxAuthorities)
		}
		s.jwt = make(map[string]*jwtKey, len(auth))
		for _, kid := range slices.Sorted(maps.Keys(auth)) {
			k, err := vetJWTAuthority(auth[kid])
			if err != nil {
				return nil, fmt.Errorf("JWT authority %.64q: %w", kid, err)
			}
			s.jwt[kid] = k
		}
	}
	if x509b != nil {
		if x509b.TrustDomain() != td {
			return nil, fmt.Errorf("X.509 bundle of trust domain %q", x509b.TrustDomain())
		}
		auth := x509b.X509Authorities()
		if len(auth) > maxAuthorities {
			return nil, fmt.Errorf("more than %d X.509 authorities", maxAuthorities)
		}
		for i, c := range auth {
			if err := vetX509Authority(td, c); err != nil {
				return nil, fmt.Errorf("X.509 authority %d (%s): %w", i, c.Subject, err)
			}
		}
		s.x509 = x509b
	}
	if len(s.jwt) == 0 && (s.x509 == nil || s.x509.Empty()) {
		return nil, errors.New("bundle has no authorities")
	}
	return s, nil
}

// vetSPIFFEBundle is vet for a parsed SPIFFE bundle, keeping its refresh hint and
// sequence number.
func vetSPIFFEBundle(td spiffeid.TrustDomain, b *spiffebundle.Bundle) (*snapshot, error) {
	if b.TrustDomain() != td {
		return nil, fmt.Errorf("bundle of trust domain %q", b.TrustDomain())
	}
	s, err := vet(td, b.JWTBundle(), b.X509Bundle())
	if err != nil {
		return nil, err
	}
	if h, ok := b.RefreshHint(); ok {
		s.refreshHint = h
	}
	if n, ok := b.SequenceNumber(); ok {
		s.sequence = &n
	}
	return s, nil
}

func vetJWTAuthority(pub crypto.PublicKey) (*jwtKey, error) {
	kind, err := jwtcore.KeyTypeOf(pub)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w (JWT-SVIDs are signed with RSA or ECDSA)", err)
	case kind == jwtcore.Ed25519:
		return nil, fmt.Errorf("unsupported key type %T (JWT-SVIDs are signed with RSA or ECDSA)", pub)
	}
	return &jwtKey{kind: kind, pub: pub}, nil
}

// vetX509Authority refuses a CA certificate that names another trust domain: a
// bundle holding one is not this trust domain's bundle.
func vetX509Authority(td spiffeid.TrustDomain, c *x509.Certificate) error {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		other, err := spiffeid.TrustDomainFromURI(u)
		if err != nil {
			return fmt.Errorf("malformed SPIFFE URI SAN: %w", err)
		}
		if other != td {
			return fmt.Errorf("names trust domain %q", other)
		}
	}
	return nil
}

// checkSuccessor refuses an update that drops every authority of a kind the last
// good bundle had: a bundle that suddenly trusts no JWT or no X.509 authority is a
// fault of the publisher far more often than a rotation.
func checkSuccessor(old, s *snapshot) error {
	if old == nil {
		return nil
	}
	if len(old.jwt) > 0 && s.jwt != nil && len(s.jwt) == 0 {
		return errors.New("update drops every JWT authority")
	}
	if old.x509 != nil && !old.x509.Empty() && s.x509 != nil && s.x509.Empty() {
		return errors.New("update drops every X.509 authority")
	}
	return nil
}
