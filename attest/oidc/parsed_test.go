package oidc_test

import (
	"errors"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
)

// TestVerifyParsedBindsClaimsToVerifiedBytes: claims parsed from one token cannot be
// paired with another token's valid signature.
func TestVerifyParsedBindsClaimsToVerifiedBytes(t *testing.T) {
	e := newEnv(t)
	good := e.token()
	p, err := attest.ParseInsecure(good, attest.TypeJWT)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.v.VerifyParsed(t.Context(), p); err != nil {
		t.Fatalf("parsed good token refused: %v", err)
	}
	other, err := attest.ParseInsecure(e.token(set("sub", "system:serviceaccount:evil:x")), attest.TypeJWT)
	if err != nil {
		t.Fatal(err)
	}
	forged := *p
	forged.Payload, forged.Claims = other.Payload, other.Claims
	if _, err := e.v.VerifyParsed(t.Context(), &forged); !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("mismatched payload: %v", err)
	}
}
