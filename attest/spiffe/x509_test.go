package spiffe_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

func TestVerifyX509SVID(t *testing.T) {
	cas := testCAs()
	caA, caB := cas[tdA], cas[tdB]
	idA := "spiffe://" + tdA + "/ns/prod/sa/api"
	tests := []struct {
		name     string
		chain    func(t *testing.T) []*x509.Certificate
		advance  time.Duration // of the verifier's clock before verifying
		want     error         // nil: attested
		wantText string
		check    func(t *testing.T, chain []*x509.Certificate, w *attest.Workload)
	}{
		{name: "good", chain: func(t *testing.T) []*x509.Certificate { return []*x509.Certificate{caA.svid(t, idA)} },
			check: func(t *testing.T, chain []*x509.Certificate, w *attest.Workload) {
				leaf := chain[0]
				sum := sha256.Sum256(leaf.Raw)
				switch {
				case w.Upstream != "spiffe-"+tdA, w.Issuer != "spiffe://"+tdA, w.Subject != idA, w.ID != idA,
					!w.Expiry.Equal(leaf.NotAfter), !w.IssuedAt.Equal(leaf.NotBefore), w.Audience != nil:
					t.Fatalf("workload %+v", w)
				case w.Claims["sub"] != idA, w.Claims["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]),
					w.Claims["x5t#S256"] != spiffe.Thumbprint(leaf), len(w.Claims) != 2:
					t.Fatalf("claims %v", w.Claims)
				case w.Attributes["trust_domain"] != tdA, w.Attributes["path"] != "/ns/prod/sa/api", w.Attributes["sub"] != idA:
					t.Fatalf("attributes %v", w.Attributes)
				}
			}},
		{name: "through an intermediate", chain: func(t *testing.T) []*x509.Certificate {
			mid := caA.intermediate(t)
			return []*x509.Certificate{mid.svid(t, idA), mid.cert}
		}},
		{name: "expiry is the chain's earliest", chain: func(t *testing.T) []*x509.Certificate {
			mid := caA.intermediate(t)
			leaf := mid.svid(t, idA, func(c *x509.Certificate) { c.NotAfter = mid.cert.NotAfter.Add(time.Hour) })
			return []*x509.Certificate{leaf, mid.cert}
		}, check: func(t *testing.T, chain []*x509.Certificate, w *attest.Workload) {
			if !w.Expiry.Equal(chain[1].NotAfter) {
				t.Fatalf("expiry %v, want the intermediate's %v", w.Expiry, chain[1].NotAfter)
			}
		}},
		{name: "wrong trust domain", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caB.svid(t, "spiffe://"+tdB+"/w")}
		}, want: attest.ErrInvalid, wantText: `SPIFFE ID of trust domain "b.example"`},
		{name: "chain to another domain", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caB.svid(t, idA)}
		}, want: attest.ErrInvalid, wantText: "could not verify leaf certificate"},
		{name: "chain to another domain through its intermediate", chain: func(t *testing.T) []*x509.Certificate {
			mid := caB.intermediate(t)
			return []*x509.Certificate{mid.svid(t, idA), mid.cert}
		}, want: attest.ErrInvalid, wantText: "could not verify leaf certificate"},
		{name: "self-signed leaf", chain: func(t *testing.T) []*x509.Certificate {
			self := mustCA(tdA)
			return []*x509.Certificate{self.svid(t, idA)}
		}, want: attest.ErrInvalid, wantText: "could not verify leaf certificate"},
		{name: "CA leaf", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, idA, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign })}
		}, want: attest.ErrInvalid, wantText: "CA flag"},
		{name: "keyCertSign leaf", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, idA, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign })}
		}, want: attest.ErrInvalid, wantText: "KeyCertSign"},
		{name: "cRLSign leaf", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, idA, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign })}
		}, want: attest.ErrInvalid, wantText: "KeyCrlSign"},
		{name: "two URI SANs", chain: func(t *testing.T) []*x509.Certificate {
			c, _ := caA.issue(t, svidTemplate([]string{idA, "spiffe://" + tdA + "/admin"}))
			return []*x509.Certificate{c}
		}, want: attest.ErrInvalid, wantText: "more than one URI SAN"},
		{name: "no URI SAN", chain: func(t *testing.T) []*x509.Certificate {
			c, _ := caA.issue(t, svidTemplate(nil, func(c *x509.Certificate) { c.DNSNames = []string{"api.a.example"} }))
			return []*x509.Certificate{c}
		}, want: attest.ErrInvalid, wantText: "no URI SAN"},
		{name: "uppercase trust domain in the URI SAN", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, "spiffe://A.example/w")}
		}, want: attest.ErrInvalid},
		{name: "percent-encoded path", chain: func(t *testing.T) []*x509.Certificate {
			c, _ := caA.issue(t, svidTemplate(nil, func(c *x509.Certificate) {
				c.URIs = []*url.URL{{Scheme: "spiffe", Host: tdA, Path: "/a/b", RawPath: "/a%2Fb"}}
			}))
			return []*x509.Certificate{c}
		}, want: attest.ErrInvalid},
		{name: "trust domain ID only", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, "spiffe://"+tdA)}
		}, want: attest.ErrInvalid, wantText: "not a workload"},
		{name: "expired", advance: 2 * time.Hour, chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, idA)}
		}, want: attest.ErrInvalid, wantText: "expired"},
		{name: "not yet valid", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, idA, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(10 * time.Minute) })}
		}, want: attest.ErrInvalid},
		{name: "empty chain", chain: func(*testing.T) []*x509.Certificate { return nil }, want: attest.ErrMalformed},
		{name: "nil certificate", chain: func(t *testing.T) []*x509.Certificate {
			return []*x509.Certificate{caA.svid(t, idA), nil}
		}, want: attest.ErrMalformed},
		{name: "overlong chain", chain: func(t *testing.T) []*x509.Certificate {
			c := caA.svid(t, idA)
			chain := make([]*x509.Certificate, spiffe.MaxChainLength+1)
			for i := range chain {
				chain[i] = c
			}
			return chain
		}, want: attest.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			v := fileVerifier(t, tdA, goodBundle(t, tdA), clock)
			chain := tt.chain(t)
			clock.Advance(tt.advance)
			w, err := v.VerifyX509(t.Context(), chain)
			if tt.want != nil {
				t.Logf("refused: %v", err)
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
				if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("error %q lacks %q", err, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.check != nil {
				tt.check(t, chain, w)
			}
			// Differential: go-spiffe verifies it too, with the same ID.
			id, _, err := x509svid.Verify(chain, x509BundleOf(tdA), x509svid.WithTime(clock.Now()))
			if err != nil || id.String() != w.Subject {
				t.Fatalf("go-spiffe: %v, %v", id, err)
			}
		})
	}
}

// x509BundleOf is trust domain td's test X.509 bundle.
func x509BundleOf(td string) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), []*x509.Certificate{testCAs()[td].cert})
}
