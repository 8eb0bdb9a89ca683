package oidc_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/oidc"
)

// An upstream whose keys come from a file (an air-gapped cluster), verifying a
// Kubernetes projected service account token.
func Example() {
	ctx := context.Background()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)) // a fixed key for the example
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: key.Public(), KeyID: "k1", Algorithm: "EdDSA", Use: "sig"},
	}})
	dir, _ := os.MkdirTemp("", "jwks")
	defer os.RemoveAll(dir)
	jwksFile := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksFile, set, 0o600)

	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	k8s, err := attrs.Compile(attrs.PresetKubernetes, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := oidc.New(ctx, oidc.Config{
		Name:      "prod-cluster",
		Issuer:    "https://kubernetes.default.svc",
		Audiences: []string{"sts.example.com"},
		JWKSFile:  jwksFile,
		Now:       func() time.Time { return now },
		// Only this cluster's payments namespace, with the Kubernetes attributes.
		Subjects:   []string{"system:serviceaccount:payments:*"},
		Attributes: k8s,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	router, err := attest.NewRouter(map[string]attest.Verifier{v.Issuer(): v})
	if err != nil {
		fmt.Println(err)
		return
	}

	// What the kubelet would mount into a pod.
	enc := base64.RawURLEncoding.EncodeToString
	input := enc([]byte(`{"alg":"EdDSA","kid":"k1"}`)) + "." + enc([]byte(`{`+
		`"iss":"https://kubernetes.default.svc","aud":["sts.example.com"],`+
		`"sub":"system:serviceaccount:payments:api","exp":1893456600,"iat":1893456000,`+
		`"kubernetes.io":{"namespace":"payments","serviceaccount":{"name":"api"},"pod":{"name":"api-1","uid":"7f3c"}}}`))
	token := input + "." + enc(ed25519.Sign(key, []byte(input)))

	w, err := router.Attest(ctx, token, attest.TypeJWT)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(w.Upstream, w.Subject)
	fmt.Println(w.Attributes["namespace"], w.Attributes["service_account"], w.Attributes["pod"], w.Attributes["pod_uid"])
	fmt.Println(w.Expiry.Sub(now))
	// Output:
	// prod-cluster system:serviceaccount:payments:api
	// payments api api-1 7f3c
	// 10m0s
}
