package jwtcore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheckTimes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) float64 { return float64(now.Add(d).Unix()) }
	const skew = 30 * time.Second
	claims := func(kv ...any) map[string]any {
		c := map[string]any{"exp": at(time.Minute)}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
				continue
			}
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	noSkew := TimeRules{}
	withSkew := TimeRules{Skew: skew}
	maxAge := TimeRules{Skew: skew, MaxAge: time.Hour}
	for _, tc := range []struct {
		name  string
		c     map[string]any
		r     TimeRules
		want  string // error substring; "" for success
		check func(Times) bool
	}{
		{"valid", claims(), noSkew, "", func(tm Times) bool {
			return tm.Expiry.Equal(now.Add(time.Minute)) && tm.NotBefore.IsZero() && tm.IssuedAt.IsZero()
		}},
		{"exp missing", claims("exp", nil), withSkew, "exp missing", nil},
		{"exp not a number", claims("exp", "soon"), withSkew, "exp is not a number", nil},
		{"exp negative", claims("exp", -1.0), withSkew, "exp out of range", nil},
		{"exp past year 9999", claims("exp", 253402300800.0), withSkew, "exp out of range", nil},
		{"exp NaN", claims("exp", math.NaN()), withSkew, "exp out of range", nil},
		{"exp +Inf", claims("exp", math.Inf(1)), withSkew, "exp out of range", nil},
		{"expiring this instant", claims("exp", at(0)), noSkew, "expired at", nil},
		{"expired a second ago", claims("exp", at(-time.Second)), noSkew, "expired at", nil},
		{"expired within skew", claims("exp", at(-skew+time.Second)), withSkew, "", nil},
		{"expired exactly skew ago", claims("exp", at(-skew)), withSkew, "expired at", nil},
		{"fractional exp", claims("exp", float64(now.Unix())+0.5), noSkew, "", func(tm Times) bool {
			return tm.Expiry.Equal(now.Add(500 * time.Millisecond))
		}},
		{"nbf now", claims("nbf", at(0)), noSkew, "", func(tm Times) bool { return tm.NotBefore.Equal(now) }},
		{"nbf a second ahead", claims("nbf", at(time.Second)), noSkew, "not valid before", nil},
		{"nbf exactly skew ahead", claims("nbf", at(skew)), withSkew, "", nil},
		{"nbf beyond skew", claims("nbf", at(skew+time.Second)), withSkew, "not valid before", nil},
		{"nbf not a number", claims("nbf", true), withSkew, "nbf is not a number", nil},
		{"iat now", claims("iat", at(0)), noSkew, "", func(tm Times) bool { return tm.IssuedAt.Equal(now) }},
		{"iat a second ahead", claims("iat", at(time.Second)), noSkew, "issued in the future", nil},
		{"iat exactly skew ahead", claims("iat", at(skew)), withSkew, "", nil},
		{"iat beyond skew", claims("iat", at(skew+time.Second)), withSkew, "issued in the future", nil},
		{"iat out of range", claims("iat", 1e300), withSkew, "iat out of range", nil},
		{"iat optional", claims(), withSkew, "", nil},
		{"iat required", claims(), TimeRules{RequireIssuedAt: true}, "iat missing", nil},
		{"iat required and present", claims("iat", at(-time.Minute)), TimeRules{RequireIssuedAt: true}, "", nil},
		{"max age: iat missing", claims(), maxAge, "iat missing and a max token age is set", nil},
		{"max age: young", claims("iat", at(-time.Minute)), maxAge, "", nil},
		{"max age: exactly max age plus skew", claims("iat", at(-time.Hour-skew)), maxAge, "", nil},
		{"max age: beyond max age plus skew", claims("iat", at(-time.Hour-skew-time.Second)), maxAge, "more than max token age 1h0m0s", nil},
		{"max age: iat in the future wins", claims("iat", at(time.Hour)), maxAge, "issued in the future", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := CheckTimes(tc.c, now, tc.r)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want success", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			case tc.check != nil && !tc.check(tm):
				t.Fatalf("times %+v", tm)
			}
		})
	}
}

func TestCheckAudience(t *testing.T) {
	accepted := []string{"sts", "https://sts.example"}
	for _, tc := range []struct {
		name     string
		aud      any
		accepted []string
		want     []string // nil: an error
	}{
		{"string", "sts", accepted, []string{"sts"}},
		{"list", []any{"other", "https://sts.example"}, accepted, []string{"other", "https://sts.example"}},
		{"string not accepted", "other", accepted, nil},
		{"list not accepted", []any{"a", "b"}, accepted, nil},
		{"prefix is not a match", "st", accepted, nil},
		{"case matters", "STS", accepted, nil},
		{"missing", nil, accepted, nil},
		{"empty string", "", accepted, nil},
		{"empty list", []any{}, accepted, nil},
		{"empty entry", []any{"sts", ""}, accepted, nil},
		{"non-string entry", []any{"sts", 1.0}, accepted, nil},
		{"number", 1.0, accepted, nil},
		{"object", map[string]any{"sts": true}, accepted, nil},
		{"empty expectation is an error", "sts", nil, nil},
		{"empty expectation with empty list", []any{}, []string{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := map[string]any{}
			if tc.aud != nil {
				c["aud"] = tc.aud
			}
			got, err := CheckAudience(c, tc.accepted)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted %v", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestAlgorithmTable(t *testing.T) {
	algs := Algorithms()
	want := []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
	if !slices.Equal(algs, want) {
		t.Fatalf("Algorithms() = %v", algs)
	}
	algs[0] = "none"
	if Algorithms()[0] != "RS256" {
		t.Fatal("Algorithms shares its slice")
	}
	for _, bad := range []string{"", "none", "None", "HS256", "hs256", "rs256", "ES256K", "RSA-OAEP"} {
		if _, ok := KeyTypeFor(bad); ok {
			t.Errorf("KeyTypeFor(%q) ok", bad)
		}
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	keys := map[KeyType]crypto.PublicKey{RSA: &rsaKey.PublicKey}
	for kt, curve := range map[KeyType]elliptic.Curve{P256: elliptic.P256(), P384: elliptic.P384(), P521: elliptic.P521()} {
		k, _ := ecdsa.GenerateKey(curve, rand.Reader)
		keys[kt] = &k.PublicKey
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	keys[Ed25519] = edPub
	fits := map[string]KeyType{
		"RS256": RSA, "RS384": RSA, "RS512": RSA, "PS256": RSA, "PS384": RSA, "PS512": RSA,
		"ES256": P256, "ES384": P384, "ES512": P521, "EdDSA": Ed25519,
	}
	for kt, pub := range keys {
		got, err := KeyTypeOf(pub)
		if err != nil || got != kt {
			t.Fatalf("KeyTypeOf(%s key) = %v, %v", kt, got, err)
		}
		for _, alg := range append(want, "none", "HS256") {
			if f := kt.Fits(alg); f != (fits[alg] == kt) {
				t.Errorf("%s.Fits(%s) = %v", kt, alg, f)
			}
		}
	}
	for _, tc := range []struct {
		kt          KeyType
		jwkAlg, alg string
		want        bool
	}{
		{P256, "", "ES256", true},
		{P256, "ES256", "ES256", true},
		{P256, "ES384", "ES256", false}, // the JWK names another algorithm
		{RSA, "RS256", "PS256", false},
		{RSA, "PS256", "PS256", true},
		{P384, "ES256", "ES256", false}, // the JWK's alg does not fit its key
	} {
		if got := tc.kt.FitsJWK(tc.jwkAlg, tc.alg); got != tc.want {
			t.Errorf("%s.FitsJWK(%q, %q) = %v", tc.kt, tc.jwkAlg, tc.alg, got)
		}
	}
	if KeyType(0).Fits("RS256") {
		t.Error("the zero KeyType fits RS256")
	}
}

func TestKeyTypeOfRefuses(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	huge := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 8192), E: 65537} // 8193 bits
	for name, pub := range map[string]crypto.PublicKey{
		"RSA 1024":        &small.PublicKey,
		"RSA 8193":        huge,
		"P-224":           &p224.PublicKey,
		"ECDSA private":   ecPriv,
		"symmetric bytes": []byte("secret"),
		"nil":             nil,
	} {
		if kt, err := KeyTypeOf(pub); err == nil {
			t.Errorf("%s: KeyTypeOf = %v", name, kt)
		}
	}
}
