package revocation_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

func Example() {
	dir, err := os.MkdirTemp("", "revocation-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	store, err := revocation.OpenEmbedded(filepath.Join(dir, "revocation.db"), revocation.EmbeddedOptions{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()

	// Revoke a minted token until its expiry.
	if err := store.RevokeToken(ctx, "c0ffee", time.Now().Add(time.Hour), "key compromise"); err != nil {
		panic(err)
	}
	revoked, err := store.TokenRevoked(ctx, "c0ffee")
	fmt.Println("revoked:", revoked, err)

	// Block a workload, then ask before minting for it.
	if err := store.BlockSubject(ctx, "corp", "spiffe://example.org/ci", time.Now().Add(time.Hour), "stolen runner"); err != nil {
		panic(err)
	}
	err = store.Admit(ctx, revocation.Query{Upstream: "corp", Subject: "spiffe://example.org/ci"})
	var blocked *revocation.BlockedError
	if errors.Is(err, revocation.ErrBlocked) && errors.As(err, &blocked) {
		fmt.Println("blocked:", blocked.Reason)
	}
	fmt.Println("other workload:", store.Admit(ctx, revocation.Query{Upstream: "corp", Subject: "spiffe://example.org/web"}))

	// Output:
	// revoked: true <nil>
	// blocked: stolen runner
	// other workload: <nil>
}
