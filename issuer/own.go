package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// verifyOwn checks a token this STS minted: compact JWS of at most 16 KiB, typ
// at+jwt, signed by a key of the ring with that key's algorithm, iss this issuer,
// not expired, nbf/iat not in the future. It returns the claims and the kid of the
// ring key that verified the signature (the token's KeyID fact: revocation by kid).
func (s *signing) verifyOwn(raw string) (map[string]any, string, error) {
	if len(raw) > 16<<10 || strings.Count(raw, ".") != 2 {
		return nil, "", errors.New("not a compact JWS")
	}
	ring := s.currentRing()
	algs := make([]jose.SignatureAlgorithm, 0, len(ring.keys))
	for _, k := range ring.keys {
		algs = append(algs, k.alg)
	}
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return nil, "", err
	}
	if len(jws.Signatures) != 1 {
		return nil, "", errors.New("not exactly one signature")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, TypeAccessTokenJWT) {
		return nil, "", fmt.Errorf("typ %q is not at+jwt", typ)
	}
	var key *signingKey
	for _, k := range ring.keys {
		if k.kid == h.KeyID && string(k.alg) == h.Algorithm {
			key = k
		}
	}
	if key == nil {
		return nil, "", errors.New("unknown key")
	}
	payload, err := jws.Verify(key.signer.Public())
	if err != nil {
		return nil, "", err
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, "", err
	}
	if claims["iss"] != s.issuer {
		return nil, "", errors.New("another issuer")
	}
	now := s.now().Unix()
	exp, ok := claims["exp"].(float64)
	if !ok || int64(exp) <= now {
		return nil, "", errors.New("expired")
	}
	for _, name := range []string{"nbf", "iat"} {
		if v, ok := claims[name].(float64); ok && int64(v) > now {
			return nil, "", fmt.Errorf("%s in the future", name)
		}
	}
	return claims, key.kid, nil
}
