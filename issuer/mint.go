package issuer

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
)

// TypeAccessTokenJWT is the RFC 9068 media type of minted tokens' `typ` header.
const TypeAccessTokenJWT = "at+jwt"

// minter signs RFC 9068 access tokens with the active key of a key ring. The go-jose
// signer is built once; claims are marshalled by hand (PERFORMANCE.md lesson 2).
type minter struct {
	issuer string
	key    *signingKey
	signer jose.Signer
}

// newMinter signs with key's go-jose signer (for an opaque key, a PKCS#11 or
// KMS one, through its crypto.Signer).
func newMinter(issuer string, key *signingKey) (*minter, error) {
	s, err := key.jose()
	if err != nil {
		return nil, err
	}
	return &minter{issuer: issuer, key: key, signer: s}, nil
}

// claims are the minted token's claims.
type claims struct {
	Subject  string
	Audience []string
	IssuedAt time.Time
	Expiry   time.Time
	ID       string
	ClientID string
	Scopes   []string
	Upstream string
	// Act is the delegation chain, current actor first (RFC 8693 §4.1).
	Act []attest.Actor
	// Attributes are the workload attributes policy chose to copy.
	Attributes map[string]string
	// CertThumbprint binds the token to the client certificate: cnf.x5t#S256.
	CertThumbprint string
	// Binding is the fingerprint of the binding attributes (`bnd`).
	Binding string
	// StatusURI and StatusIdx are the token's entry in a Token Status List
	// (claim status.status_list); none when StatusURI is empty.
	StatusURI string
	StatusIdx uint32
}

// mint returns the signed compact JWS.
func (m *minter) mint(c *claims) (string, error) {
	tok, _, err := m.mintKID(c)
	return tok, err
}

// mintKID returns the signed compact JWS and the kid of the key that signed it.
func (m *minter) mintKID(c *claims) (string, string, error) {
	buf := make([]byte, 0, 384)
	buf = append(buf, `{"iss":`...)
	buf = appendJSONString(buf, m.issuer)
	buf = append(buf, `,"sub":`...)
	buf = appendJSONString(buf, c.Subject)
	buf = append(buf, `,"aud":`...)
	if len(c.Audience) == 1 {
		buf = appendJSONString(buf, c.Audience[0])
	} else {
		buf = append(buf, '[')
		for i, a := range c.Audience {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, a)
		}
		buf = append(buf, ']')
	}
	iat := c.IssuedAt.Unix()
	buf = append(buf, `,"exp":`...)
	buf = strconv.AppendInt(buf, c.Expiry.Unix(), 10)
	buf = append(buf, `,"iat":`...)
	buf = strconv.AppendInt(buf, iat, 10)
	buf = append(buf, `,"nbf":`...)
	buf = strconv.AppendInt(buf, iat, 10)
	buf = append(buf, `,"jti":`...)
	buf = appendJSONString(buf, c.ID)
	buf = append(buf, `,"client_id":`...)
	buf = appendJSONString(buf, c.ClientID)
	if len(c.Scopes) > 0 {
		buf = append(buf, `,"scope":"`...)
		for i, s := range c.Scopes {
			if i > 0 {
				buf = append(buf, ' ')
			}
			buf = appendJSONStringBody(buf, s)
		}
		buf = append(buf, '"')
	}
	if c.Upstream != "" {
		buf = append(buf, `,"upstream":`...)
		buf = appendJSONString(buf, c.Upstream)
	}
	if c.Binding != "" {
		buf = append(buf, `,"bnd":`...)
		buf = appendJSONString(buf, c.Binding)
	}
	if c.CertThumbprint != "" {
		buf = append(buf, `,"cnf":{"x5t#S256":`...)
		buf = appendJSONString(buf, c.CertThumbprint)
		buf = append(buf, '}')
	}
	if len(c.Act) > 0 {
		buf = append(buf, `,"act":`...)
		buf = appendAct(buf, c.Act)
	}
	if len(c.Attributes) > 0 {
		buf = append(buf, `,"attributes":{`...)
		names := make([]string, 0, len(c.Attributes))
		for n := range c.Attributes {
			names = append(names, n)
		}
		slices.Sort(names)
		for i, n := range names {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, n)
			buf = append(buf, ':')
			buf = appendJSONString(buf, c.Attributes[n])
		}
		buf = append(buf, '}')
	}
	if c.StatusURI != "" {
		buf = appendStatusClaim(buf, c.StatusURI, c.StatusIdx)
	}
	buf = append(buf, '}')
	var (
		jws *jose.JSONWebSignature
		kid string
		err error
	)
	if ks, ok := m.signer.(kidSigner); ok {
		jws, kid, err = ks.signKID(buf)
	} else {
		jws, err = m.signer.Sign(buf)
		kid = m.key.kid
	}
	if err != nil {
		return "", "", fmt.Errorf("sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", "", err
	}
	return tok, kid, nil
}

// kidSigner is a signer that says which key signed (the key ring's, whose active
// key may change between two tokens).
type kidSigner interface {
	signKID(payload []byte) (*jose.JSONWebSignature, string, error)
}

// appendAct appends the nested act claim: {"sub":..,"iss":..,"act":{...}}.
func appendAct(buf []byte, chain []attest.Actor) []byte {
	buf = append(buf, `{"sub":`...)
	buf = appendJSONString(buf, chain[0].Subject)
	if chain[0].Issuer != "" {
		buf = append(buf, `,"iss":`...)
		buf = appendJSONString(buf, chain[0].Issuer)
	}
	if len(chain) > 1 {
		buf = append(buf, `,"act":`...)
		buf = appendAct(buf, chain[1:])
	}
	return append(buf, '}')
}

// newTokenID returns a random 128-bit jti, base64url.
func newTokenID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// appendJSONString appends s as a JSON string.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	buf = appendJSONStringBody(buf, s)
	return append(buf, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONStringBody appends s escaped for a JSON string, without quotes. Invalid
// UTF-8 becomes U+FFFD, as encoding/json does. Runs of bytes that need no escape
// are copied at once.
func appendJSONStringBody(buf []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		buf = append(buf, s[start:i]...)
		if c < utf8.RuneSelf {
			if c == '"' || c == '\\' {
				buf = append(buf, '\\', c)
			} else { // a control character
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			buf = append(buf, s[i:i+size]...)
		}
		i += size
		start = i
	}
	return append(buf, s[start:]...)
}

// jsonPlain marks the bytes a JSON string holds as they are: ASCII but for
// control characters, '"' and '\\'.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()
