package revocationtest

import (
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// testIdentity: a new store has no identity record; one created is read back
// (it outlives the store's other writes); a second CreateIdentity returns the
// first (replicas initialising at once agree); SetIdentity replaces it; a write
// probe succeeds on a healthy store. Telling a lost store from a new one rests
// on this (revocation/storeguard).
func testIdentity(t *testing.T, s revocation.Store) {
	ids, ok := s.(revocation.Identified)
	if !ok {
		t.Fatalf("%T does not implement revocation.Identified", s)
	}
	ctx := t.Context()
	if id, found, err := ids.Identity(ctx); err != nil || found {
		t.Fatalf("new store: Identity = %+v, %v, %v; want none", id, found, err)
	}
	want := revocation.Identity{ID: "00112233445566778899aabbccddeeff", Created: time.Now().UTC().Truncate(time.Second), Accepted: true}
	if got, err := ids.CreateIdentity(ctx, want); err != nil || got.ID != want.ID {
		t.Fatalf("CreateIdentity on a new store = %+v, %v", got, err)
	}
	other := revocation.Identity{ID: "0123456789abcdef0123456789abcdef", Created: want.Created}
	if got, err := ids.CreateIdentity(ctx, other); err != nil || got.ID != want.ID || !got.Accepted {
		t.Fatalf("CreateIdentity on a store with an identity = %+v, %v; want the one in force", got, err)
	}
	create(t, s, revocation.KindRevoke, "jti=after-identity")
	if err := ids.ProbeWrite(ctx); err != nil {
		t.Fatalf("ProbeWrite: %v", err)
	}
	got, found, err := ids.Identity(ctx)
	if err != nil || !found || got.ID != want.ID || !got.Created.Equal(want.Created) || !got.Accepted {
		t.Fatalf("Identity = %+v, %v, %v; want %+v", got, found, err, want)
	}
	want.ID, want.Accepted = "ffeeddccbbaa99887766554433221100", false
	if err := ids.SetIdentity(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := ids.Identity(ctx); got.ID != want.ID || got.Accepted {
		t.Fatalf("replaced Identity = %+v; want %+v", got, want)
	}
}
