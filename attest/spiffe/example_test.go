package spiffe_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
)

// A trust domain from a bundle file, with a path template, behind a Router: an
// mTLS client's X.509-SVID becomes a Workload with attributes for policy.
func Example() {
	ctx := context.Background()
	ca := mustCA("prod.example") // the trust domain's X.509 authority (test helper)

	// The trust domain's SPIFFE bundle, as `spire-server bundle show -format spiffe`
	// writes it.
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("prod.example"))
	b.AddX509Authority(ca.cert)
	doc, err := b.Marshal()
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bundle")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "prod.example.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		log.Fatal(err)
	}

	v, err := spiffe.New(ctx, spiffe.Config{
		Name:          "prod-spire",
		TrustDomain:   "prod.example",
		Audiences:     []string{"sts.example.com"},
		BundleFile:    path,
		PathTemplates: []string{"/ns/{namespace}/sa/{service_account}"},
		Subjects:      []string{"spiffe://prod.example/ns/*"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	router, err := attest.NewRouterRoutes(attest.Routes{
		ByTrustDomain: map[string]attest.Verifier{v.TrustDomain().Name(): v},
	})
	if err != nil {
		log.Fatal(err)
	}

	// In a server: r.TLS.PeerCertificates.
	leaf, _ := ca.mustIssue(svidTemplate([]string{"spiffe://prod.example/ns/payments/sa/api"}))
	w, err := router.AttestX509(ctx, []*x509.Certificate{leaf})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.Upstream, w.Issuer, w.Subject)
	for _, name := range []string{"trust_domain", "path", "namespace", "service_account"} {
		fmt.Printf("%s=%s\n", name, w.Attributes[name])
	}
	fmt.Println(w.Claims["x5t#S256"] == spiffe.Thumbprint(leaf))
	// Output:
	// prod-spire spiffe://prod.example spiffe://prod.example/ns/payments/sa/api
	// trust_domain=prod.example
	// path=/ns/payments/sa/api
	// namespace=payments
	// service_account=api
	// true
}
