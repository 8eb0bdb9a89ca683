package spiffe_test

import (
	"errors"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
)

// FuzzRouterJWTSVID feeds arbitrary strings to a Router over trust domains A and B
// (bundle files: no network). It must never panic, every error must wrap a
// sentinel, and whatever it attests must be signed by A's or B's key and name a
// SPIFFE ID of that same trust domain.
func FuzzRouterJWTSVID(f *testing.F) {
	k := testKeys()
	clock := newClock()
	a := fileVerifier(f, tdA, goodBundle(f, tdA), clock)
	b := fileVerifier(f, tdB, goodBundle(f, tdB), clock)
	r := router(f, a, b)
	now := clock.Now()
	good := svidToken(f, now)
	if _, err := r.Attest(f.Context(), good, attest.TypeJWT); err != nil {
		f.Fatalf("good seed refused: %v", err)
	}
	for _, s := range []string{
		good,
		signRaw(f, "ES256", hdr("ES256", "b1"), claims(f, now, set("sub", "spiffe://b.example/w")), k.b1),
		signRaw(f, "ES256", hdr("ES256", "b1"), claims(f, now), k.b1),
		signRaw(f, "RS256", hdr("RS256", "rsa"), claims(f, now), k.aRSA),
		svidToken(f, now, set("sub", "spiffe://a.example/x/../y")),
		svidToken(f, now, set("iss", "https://x.example")),
		strings.Replace(good, ".", "..", 1),
		good[:len(good)-2],
		"a.b.c", "", "..",
	} {
		f.Add(s)
	}
	keys := map[string]any{tdA: k.a1.Public(), tdB: k.b1.Public()}
	f.Fuzz(func(t *testing.T, raw string) {
		w, err := r.Attest(t.Context(), raw, attest.TypeJWT)
		if err != nil {
			for _, sentinel := range []error{attest.ErrMalformed, attest.ErrUnknownIssuer, attest.ErrInvalid, attest.ErrUnavailable} {
				if errors.Is(err, sentinel) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		td := w.Attributes["trust_domain"]
		if w.Issuer != "spiffe://"+td || !strings.HasPrefix(w.Subject, "spiffe://"+td+"/") {
			t.Fatalf("workload %+v", w)
		}
		jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256})
		if err != nil {
			t.Fatalf("attested a token go-jose cannot parse: %v", err)
		}
		pub := keys[td]
		if td == tdA && jws.Signatures[0].Header.KeyID != "a1" {
			return // A's other keys: the signature was checked by kid; a1 is the fuzzed one
		}
		if _, err := jws.Verify(pub); err != nil {
			t.Fatalf("attested a token whose signature does not verify under %s's key: %v", td, err)
		}
	})
}
