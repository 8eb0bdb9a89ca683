package verify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/safeconduct/safeconduct/verify"
)

// An API protected by the middleware, with the revocation feed required. (Compiled,
// not run: it needs a running STS. verify_test.go runs the same against a fake one.)
func Example() {
	ctx := context.Background()
	v, err := verify.New(ctx, verify.Config{
		Issuer:   "https://sts.example",
		Audience: "https://ledger.internal",
		FeedToken: func(context.Context) (string, error) {
			b, err := os.ReadFile("/var/run/secrets/sts/feed-token")
			return strings.TrimSpace(string(b)), err
		},
		RequireFeed: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()

	http.Handle("GET /v1/balance", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := verify.TokenFromContext(r.Context())
		if !tok.HasScope("ledger.read") {
			http.Error(w, "insufficient scope", http.StatusForbidden)
			return
		}
		fmt.Fprintf(w, "balance of %s\n", tok.Subject)
	})))
}

// Verifying a token outside HTTP, e.g. from a message queue.
func ExampleVerifier_Verify() {
	var v *verify.Verifier // from verify.New
	handle := func(ctx context.Context, raw string) error {
		tok, err := v.Verify(ctx, raw)
		switch {
		case errors.Is(err, verify.ErrStale):
			return fmt.Errorf("retry later: %w", err) // revocation status unknown
		case err != nil:
			return fmt.Errorf("reject: %w", err) // invalid or revoked
		}
		fmt.Println("accepted", tok.ID, "for", tok.Subject)
		return nil
	}
	_ = handle
}
