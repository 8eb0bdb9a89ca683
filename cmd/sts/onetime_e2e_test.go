package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/internal/testredis"
)

// TestE2EOneTimeAcrossReplicas: two replicas on one Redis; a token of a one_time
// upstream exchanged at one is refused as a replay at the other.
func TestE2EOneTimeAcrossReplicas(t *testing.T) {
	addr := testredis.Start(t)
	rev := fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q], prefix: %q}\n", addr, testredis.Prefix(t))
	a, b := setup(t, rev), setup(t, rev)
	b.a = a.a // one upstream issuer behind both replicas
	for _, e := range []*e2e{a, b} {
		cfg, err := os.ReadFile(e.cfg)
		if err != nil {
			t.Fatal(err)
		}
		e.write("sts.yaml", strings.Replace(string(cfg), "jwks_file: cluster-a-jwks.json\n", "jwks_file: cluster-a-jwks.json\n    one_time: true\n", 1))
		e.write("cluster-a-jwks.json", string(a.a.JWKS()))
		e.start()
	}
	tok := a.a.Token(t, payments)
	if _, err := a.exchange(tok); err != nil {
		t.Fatalf("first exchange: %v", err)
	}
	_, err := b.exchange(tok)
	var se *stsclient.Error
	if !errors.As(err, &se) || se.Status != 400 || se.Code != "invalid_request" {
		t.Fatalf("replay at the other replica: %v", err)
	}
	// A fresh token still works at either.
	if _, err := b.exchange(a.a.Token(t, payments)); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
}
