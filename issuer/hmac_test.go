package issuer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// hmacSig is the HS256 signature of input keyed by secret (the key-confusion attack
// uses a public key's PEM bytes as the secret).
func hmacSig(secret []byte, input string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
