package issuer_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

func hmacSig(secret []byte, input string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
