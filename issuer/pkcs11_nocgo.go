//go:build !cgo

package issuer

import "errors"

// openHSM: PKCS#11 modules are loaded with dlopen through cgo, which this
// binary was built without (CGO_ENABLED=0, as the static container image is).
func openHSM(PKCS11Config, string) (hsm, error) {
	return nil, errors.New("this binary was built without cgo (CGO_ENABLED=0), which PKCS#11 needs: build sts with CGO_ENABLED=1 on a glibc base that holds the PKCS#11 module")
}
