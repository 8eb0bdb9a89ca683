package attest_test

import (
	"errors"
	"fmt"

	"github.com/safeconduct/safeconduct/attest"
)

func ExampleParseHeaderInsecure() {
	// {"alg":"none"} . {} . (no signature)
	_, err := attest.ParseHeaderInsecure("eyJhbGciOiJub25lIn0.e30.", attest.TypeJWT)
	fmt.Println(errors.Is(err, attest.ErrMalformed))

	// {"alg":"ES256","kid":"k1","typ":"at+jwt"} is fine as an access token, not as an
	// ID token.
	const hdr = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0"
	h, err := attest.ParseHeaderInsecure(hdr+".e30.c2ln", attest.TypeAccessToken)
	fmt.Println(h.Alg, h.Kid, err)
	_, err = attest.ParseHeaderInsecure(hdr+".e30.c2ln", attest.TypeIDToken)
	fmt.Println(errors.Is(err, attest.ErrMalformed))
	// Output:
	// true
	// ES256 k1 <nil>
	// true
}
