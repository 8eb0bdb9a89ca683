package attest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
	"github.com/safeconduct/safeconduct/internal/jwtcore"
)

// MaxTokenSize is the largest credential, in bytes, that is looked at. Larger ones are
// refused before anything is split or decoded.
const MaxTokenSize = 16 << 10

// Nesting bounds for the untrusted JSON of a token. A header holds flat members (an
// embedded jwk or x5c at depth 2); claims nest a little (`act` chains, the
// `kubernetes.io` object).
const (
	maxHeaderDepth = 4
	// MaxClaimsDepth bounds the nesting of a token's claims, for the router and the
	// verifiers alike.
	MaxClaimsDepth = 32
)

// SignatureAlgorithms returns the JWS algorithms an upstream may be configured to
// use, a fresh slice the caller may keep: asymmetric only (package
// internal/jwtcore's table). `none` and the HMAC family are absent on purpose.
func SignatureAlgorithms() []string {
	return jwtcore.Algorithms()
}

// IsSignatureAlgorithm reports whether alg is one of SignatureAlgorithms (exact,
// case-sensitive match: "None" or "hs256" fail as well).
func IsSignatureAlgorithm(alg string) bool {
	_, ok := jwtcore.KeyTypeFor(alg)
	return ok
}

// Header is the JOSE header of a compact JWS after ParseHeaderInsecure checked it.
// Nothing in it is authenticated until a verifier checked the signature.
type Header struct {
	// Alg is one of SignatureAlgorithms.
	Alg string
	// Kid is the key ID, empty when the header has none.
	Kid string
	// Typ is the `typ` as sent, empty when absent.
	Typ string
}

// b64 is the encoding of every JWS segment: unpadded base64url with canonical
// trailing bits, as every encoder writes it.
var b64 = base64.RawURLEncoding.Strict()

// ParseHeaderInsecure runs every check on raw, presented as tokenType, that needs no
// key and no network, and returns the JOSE header. It does NOT verify the signature:
// the result only says that raw is worth verifying. In order:
//
//   - tokenType is one of the Type* constants, else ErrUnsupportedType;
//   - raw is at most MaxTokenSize bytes (checked before anything else is read);
//   - raw is a compact JWS: three non-empty base64url segments, exactly two dots.
//     JWE (four dots), JSON serialization and whitespace are refused;
//   - the header is one JSON object without duplicate names;
//   - `alg` is one of SignatureAlgorithms (never `none`, never HMAC);
//   - `crit`, `b64`, `zip` and `enc` are absent, and `cty` does not announce a nested
//     JWT;
//   - `typ` is absent, `JWT`, or `at+jwt` unless tokenType is TypeIDToken
//     (media types compared case-insensitively, `application/` optional).
//
// `jku`, `x5u`, `jwk` and `x5c` are ignored: keys come only from the upstream's
// configured key set, never from the token. Errors wrap ErrMalformed (or
// ErrUnsupportedType).
func ParseHeaderInsecure(raw, tokenType string) (Header, error) {
	if len(raw) > MaxTokenSize {
		return Header{}, fmt.Errorf("%w: token of %d bytes exceeds %d", ErrMalformed, len(raw), MaxTokenSize)
	}
	if err := checkTokenType(tokenType); err != nil {
		return Header{}, err
	}
	hdrEnd, _, err := splitCompact(raw)
	if err != nil {
		return Header{}, err
	}
	seg := raw[:hdrEnd]
	if h, ok := headers.get(seg, tokenType); ok {
		return h, nil
	}
	hdrJSON, err := b64.DecodeString(seg)
	if err != nil {
		return Header{}, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	hdr, err := strictjson.DecodeObject(hdrJSON, maxHeaderDepth)
	if err != nil {
		return Header{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	h, err := checkHeader(hdr, tokenType)
	if err == nil {
		headers.put(seg, tokenType, h)
	}
	return h, err
}

// headers remembers the headers that passed checkHeader, by encoded segment and
// token type: the tokens of one issuer and key share their header, so the
// decoding and strict parse run once per header, not once per token. The result
// depends on those two strings alone; refused headers are never kept.
var headers = headerCache{m: make(map[headerKey]Header)}

// Bounds of the header cache: what it holds is at most maxCachedHeaders entries
// of at most maxCachedHeaderLen bytes; when full it starts over, so a client
// sending ever new headers gets the uncached cost and nothing more.
const (
	maxCachedHeaders   = 256
	maxCachedHeaderLen = 512
)

type headerKey struct{ seg, tokenType string }

type headerCache struct {
	mu sync.RWMutex
	m  map[headerKey]Header
}

func (c *headerCache) get(seg, tokenType string) (Header, bool) {
	if len(seg) > maxCachedHeaderLen {
		return Header{}, false
	}
	c.mu.RLock()
	h, ok := c.m[headerKey{seg, tokenType}]
	c.mu.RUnlock()
	return h, ok
}

func (c *headerCache) put(seg, tokenType string, h Header) {
	if len(seg) > maxCachedHeaderLen {
		return
	}
	// A copy: seg is a slice of the token, whose memory the cache must not keep.
	k := headerKey{strings.Clone(seg), tokenType}
	c.mu.Lock()
	if len(c.m) >= maxCachedHeaders {
		clear(c.m)
	}
	c.m[k] = h
	c.mu.Unlock()
}

// splitCompact checks that raw is three non-empty base64url segments separated by
// exactly two dots and returns the indexes of the two dots. One pass, no allocation.
func splitCompact(raw string) (dot1, dot2 int, err error) {
	dot1, dot2 = -1, -1
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if b64urlByte[c] {
			continue
		}
		if c != '.' {
			return 0, 0, fmt.Errorf("%w: not a compact JWS (byte 0x%02x at offset %d)", ErrMalformed, c, i)
		}
		switch {
		case dot1 < 0:
			dot1 = i
		case dot2 < 0:
			dot2 = i
		default:
			return 0, 0, fmt.Errorf("%w: not a compact JWS (more than two dots)", ErrMalformed)
		}
	}
	if dot2 < 0 {
		return 0, 0, fmt.Errorf("%w: not a compact JWS (fewer than two dots)", ErrMalformed)
	}
	if dot1 == 0 || dot2 == dot1+1 || dot2 == len(raw)-1 {
		return 0, 0, fmt.Errorf("%w: empty JWS segment", ErrMalformed)
	}
	return dot1, dot2, nil
}

// b64urlByte marks the bytes of the base64url alphabet.
var b64urlByte = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['-'], t['_'] = true, true
	return t
}()

// checkHeader applies the header rules of ParseHeaderInsecure to a decoded header.
func checkHeader(hdr map[string]any, tokenType string) (Header, error) {
	var h Header
	alg, ok := hdr["alg"].(string)
	if !ok {
		return h, fmt.Errorf("%w: header alg missing or not a string", ErrMalformed)
	}
	if !IsSignatureAlgorithm(alg) {
		return h, fmt.Errorf("%w: header alg %.32q not allowed", ErrMalformed, alg)
	}
	h.Alg = alg
	for _, name := range [...]string{"crit", "b64", "zip", "enc"} {
		if _, ok := hdr[name]; ok {
			return h, fmt.Errorf("%w: header %s not supported", ErrMalformed, name)
		}
	}
	if v, ok := hdr["cty"]; ok {
		cty, ok := v.(string)
		if !ok {
			return h, fmt.Errorf("%w: header cty not a string", ErrMalformed)
		}
		if mediaType(cty) == "jwt" {
			return h, fmt.Errorf("%w: nested JWT (cty %.32q) not supported", ErrMalformed, cty)
		}
	}
	if v, ok := hdr["kid"]; ok {
		if h.Kid, ok = v.(string); !ok {
			return h, fmt.Errorf("%w: header kid not a string", ErrMalformed)
		}
	}
	if v, ok := hdr["typ"]; ok {
		if h.Typ, ok = v.(string); !ok {
			return h, fmt.Errorf("%w: header typ not a string", ErrMalformed)
		}
		switch mediaType(h.Typ) {
		case "jwt":
		case "at+jwt":
			if tokenType == TypeIDToken {
				return h, fmt.Errorf("%w: typ %.32q presented as an ID token", ErrMalformed, h.Typ)
			}
		default:
			return h, fmt.Errorf("%w: typ %.32q is not a JWT of the presented type", ErrMalformed, h.Typ)
		}
	}
	return h, nil
}

// mediaType normalizes a `typ` or `cty` value for comparison (RFC 7515 §4.1.9):
// lower case, without the optional "application/" prefix.
func mediaType(s string) string {
	s = strings.ToLower(s)
	return strings.TrimPrefix(s, "application/")
}

// checkTokenType accepts the RFC 8693 token types a JWT may be presented as.
func checkTokenType(tokenType string) error {
	switch tokenType {
	case TypeJWT, TypeIDToken, TypeAccessToken:
		return nil
	}
	return fmt.Errorf("%w: %.100q", ErrUnsupportedType, tokenType)
}

// peekUnverified returns the `iss` of raw's payload WITHOUT verifying anything, for
// routing only. raw must have passed ParseHeaderInsecure. The payload must be one
// JSON object without duplicate names at any depth, so that the `iss` routed on is
// the `iss` the verifier checks.
func peekUnverified(raw string) (iss string, err error) {
	p, err := ParseInsecure(raw, TypeJWT)
	if err != nil {
		return "", err
	}
	return issuerOf(p)
}

// issuerOf is the unverified `iss` a parsed token is routed by, required.
func issuerOf(p *Parsed) (string, error) {
	iss, ok, err := optionalIssuer(p)
	if err == nil && !ok {
		err = fmt.Errorf("%w: iss missing", ErrMalformed)
	}
	return iss, err
}

// optionalIssuer is the unverified `iss` of a parsed token: ok is false when the
// claim is absent; present, it must be a non-empty string.
func optionalIssuer(p *Parsed) (iss string, ok bool, err error) {
	v, present := p.Claims["iss"]
	if !present {
		return "", false, nil
	}
	if iss, ok = v.(string); !ok || iss == "" {
		return "", false, fmt.Errorf("%w: iss not a non-empty string", ErrMalformed)
	}
	return iss, true, nil
}

// Parsed is a token that passed every check of ParseHeaderInsecure, with its payload
// decoded (strictly: one JSON object, no duplicate names) but NOT verified. The
// Router parses once and hands the result to the Verifier, which verifies the
// signature over exactly these payload bytes before it trusts Claims.
type Parsed struct {
	// Raw is the compact JWS as presented, TokenType how it was presented.
	Raw       string
	TokenType string
	// Header is the checked JOSE header.
	Header Header
	// Payload is the decoded payload segment; Claims is its JSON object.
	Payload []byte
	Claims  map[string]any
}

// ParseInsecure runs ParseHeaderInsecure and decodes the payload. Nothing in the
// result is authenticated until a Verifier has checked the signature over Payload.
func ParseInsecure(raw, tokenType string) (*Parsed, error) {
	hdr, err := ParseHeaderInsecure(raw, tokenType)
	if err != nil {
		return nil, err
	}
	dot1 := strings.IndexByte(raw, '.')
	dot2 := dot1 + 1 + strings.IndexByte(raw[dot1+1:], '.') // shape checked by ParseHeaderInsecure
	payload, err := b64.DecodeString(raw[dot1+1 : dot2])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	claims, err := strictjson.DecodeObject(payload, MaxClaimsDepth)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return &Parsed{Raw: raw, TokenType: tokenType, Header: hdr, Payload: payload, Claims: claims}, nil
}

// VerifySignature verifies p's signature with the key that key returns and holds
// the verified payload to exactly p.Payload, so that p.Claims may be trusted
// afterwards. go-jose parses p.Raw again (algs only, exactly one signature) and must
// read the header as ParseInsecure did. key is called after parsing, so a token
// go-jose refuses never triggers a key lookup. Errors wrap ErrMalformed or
// ErrInvalid, or are key's own.
func (p *Parsed) VerifySignature(algs []jose.SignatureAlgorithm, key func() (any, error)) error {
	jws, err := jose.ParseSignedCompact(p.Raw, algs)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(jws.Signatures) != 1 {
		return fmt.Errorf("%w: %d signatures", ErrMalformed, len(jws.Signatures))
	}
	if sh := jws.Signatures[0].Header; string(sh.Algorithm) != p.Header.Alg || sh.KeyID != p.Header.Kid {
		return fmt.Errorf("%w: header parsed inconsistently", ErrMalformed)
	}
	k, err := key()
	if err != nil {
		return err
	}
	payload, err := jws.Verify(k)
	if err != nil {
		return fmt.Errorf("%w: signature: %v", ErrInvalid, err)
	}
	if !bytes.Equal(payload, p.Payload) {
		return fmt.Errorf("%w: verified payload differs from the parsed one", ErrMalformed)
	}
	return nil
}
