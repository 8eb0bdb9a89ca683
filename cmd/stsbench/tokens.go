package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/stsclient"
)

// subjectTTL is the lifetime of the minted subject tokens; the flag bounds keep a
// run (warmup + duration) well inside it.
const subjectTTL = time.Hour

// loadKey reads the first private key in a PEM file: PKCS#8, SEC 1 ("EC PRIVATE
// KEY") or PKCS#1 ("RSA PRIVATE KEY"). It must be P-256 or RSA of at least 2048 bits.
func loadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM private key", path)
		}
		var k any
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue // e.g. "EC PARAMETERS" before the key
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			if k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("%s: EC key on %s; only P-256 (ES256) is supported", path, k.Curve.Params().Name)
			}
			return k, nil
		case *rsa.PrivateKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("%s: RSA key of %d bits; at least 2048 are required", path, k.N.BitLen())
			}
			return k, nil
		default:
			return nil, fmt.Errorf("%s: a %T; only P-256 and RSA keys are supported", path, k)
		}
	}
}

// algorithm is the JWS algorithm for a key from loadKey.
func algorithm(k crypto.Signer) jose.SignatureAlgorithm {
	if _, ok := k.(*rsa.PrivateKey); ok {
		return jose.RS256
	}
	return jose.ES256
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of the key, base64url: the kid the
// quickstart publishes in its JWKS.
func thumbprint(k crypto.Signer) string {
	tp, err := (&jose.JSONWebKey{Key: k.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		panic(err) // P-256 and RSA public keys always have one
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// subjectClaims are the claims of one subject token.
type subjectClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  []string `json:"aud"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	Expiry    int64    `json:"exp"`
	ID        string   `json:"jti"`
	// Kubernetes is the `kubernetes.io` claim of a projected service-account token,
	// set when the subject has the system:serviceaccount:<ns>:<name> form, so that an
	// STS with the kubernetes attribute preset sees realistic attributes.
	Kubernetes *k8sClaim `json:"kubernetes.io,omitempty"`
}

type k8sClaim struct {
	Namespace      string  `json:"namespace"`
	ServiceAccount k8sName `json:"serviceaccount"`
	Pod            k8sName `json:"pod"`
}

type k8sName struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// kubernetesClaim derives the kubernetes.io claim from a service-account subject.
func kubernetesClaim(sub string, jti []byte) *k8sClaim {
	rest, ok := strings.CutPrefix(sub, "system:serviceaccount:")
	if !ok {
		return nil
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok {
		return nil
	}
	uid := base64.RawURLEncoding.EncodeToString(jti[:8])
	return &k8sClaim{
		Namespace:      ns,
		ServiceAccount: k8sName{Name: name, UID: "sa-" + uid},
		Pod:            k8sName{Name: name + "-" + uid[:5], UID: "pod-" + uid},
	}
}

// mintBodies signs o.tokens subject tokens (sub = prefix + index, random jti, valid
// for subjectTTL from now) and returns the encoded form body of an exchange for
// each, so that the request loop does no signing or encoding.
func mintBodies(key crypto.Signer, o *options, now time.Time) ([]string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: algorithm(key), Key: jose.JSONWebKey{Key: key, KeyID: o.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	var scopes []string
	if s := strings.Fields(o.scope); len(s) > 0 {
		scopes = s
	}
	bodies := make([]string, o.tokens)
	for i := range bodies {
		jti := make([]byte, 16)
		if _, err := rand.Read(jti); err != nil {
			return nil, err
		}
		sub := o.subjPref + strconv.Itoa(i)
		payload, err := json.Marshal(subjectClaims{
			Kubernetes: kubernetesClaim(sub, jti),
			Issuer:     o.issuer,
			Subject:    sub,
			Audience:   []string{o.upAudience},
			IssuedAt:   now.Unix(),
			NotBefore:  now.Unix(),
			Expiry:     now.Add(subjectTTL).Unix(),
			ID:         base64.RawURLEncoding.EncodeToString(jti),
		})
		if err != nil {
			return nil, err
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			return nil, err
		}
		tok, err := jws.CompactSerialize()
		if err != nil {
			return nil, err
		}
		bodies[i] = stsclient.Request{
			SubjectToken:     tok,
			SubjectTokenType: stsclient.TypeJWT,
			Audiences:        []string{o.audience},
			Scopes:           scopes,
		}.Form().Encode()
	}
	if len(bodies) == 0 {
		return nil, errors.New("no tokens")
	}
	return bodies, nil
}
