package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/testredis"
	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/verify"
)

// listStatus reads status idx of the list at uri from replica e (path of uri on
// e's listener), checking the Status List Token's signature with e's JWKS.
func listStatus(t *testing.T, e *e2e, uri string, idx int) byte {
	t.Helper()
	path := uri[strings.Index(uri, "/statuslists/"):]
	req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
	req.Header.Set("Accept", "application/statuslist+jwt")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/statuslist+jwt" {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	jws, err := jose.ParseSignedCompact(string(body), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	jr, err := e.client.Get(e.url + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	_ = json.NewDecoder(jr.Body).Decode(&set)
	jr.Body.Close()
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatal("Status List Token kid not in the JWKS")
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub        string `json:"sub"`
		StatusList struct {
			Bits int    `json:"bits"`
			Lst  string `json:"lst"`
		} `json:"status_list"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Sub != uri {
		t.Fatalf("claims %s (sub must be %s): %v", payload, uri, err)
	}
	l, err := revocation.DecodeStatusList(c.StatusList.Lst, c.StatusList.Bits, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Status(idx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func statusOf(t *testing.T, tok string) (string, int) {
	t.Helper()
	sl, _ := decodeClaims(t, tok)["status"].(map[string]any)["status_list"].(map[string]any)
	uri, _ := sl["uri"].(string)
	idx, ok := sl["idx"].(float64)
	if uri == "" || !ok {
		t.Fatalf("token without status.status_list")
	}
	return uri, int(idx)
}

// TestE2EStatusList: two replicas of the real binary on one Redis. Tokens minted
// by A carry a status reference; B serves their list; revokes by jti and by
// selector (through B's admin API) turn them INVALID there, within the lists'
// ttl; verify with StatusLists refuses them, and accepts the one not revoked.
func TestE2EStatusList(t *testing.T) {
	p := startReplicasWith(t, testredis.Start(t), 2, "status_lists: {ttl: 2s}\n")
	byJTI := exchangeAt(t, p.a, p.a.a.Token(t, payments))
	bySub := exchangeAt(t, p.a, p.a.a.Token(t, "system:serviceaccount:payments:worker"))
	kept := exchangeAt(t, p.a, p.a.a.Token(t, payments))
	ctx := context.Background()
	v, err := verify.New(ctx, verify.Config{Issuer: p.a.url, Audience: ledger, HTTPClient: p.a.client, StatusLists: true, RequireFeed: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, tok := range []string{byJTI, bySub, kept} {
		uri, idx := statusOf(t, tok)
		if !strings.HasPrefix(uri, p.a.url+"/statuslists/") {
			t.Fatalf("uri %s", uri)
		}
		if s := listStatus(t, p.b, uri, idx); s != 0 {
			t.Fatalf("fresh token: status %d on the other replica", s)
		}
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatalf("verify (status lists) rejects a fresh token: %v", err)
		}
	}
	jti, _ := decodeClaims(t, byJTI)["jti"].(string)
	for _, sel := range []string{"jti=" + jti, "upstream=cluster-a,sub=system:serviceaccount:payments:worker"} {
		if status, _ := p.admin(t, p.b, http.MethodPost, "/admin/v1/revocations", map[string]string{"selector": sel, "reason": "status list e2e"}); status != 201 {
			t.Fatalf("revoke %s: %d", sel, status)
		}
	}
	for _, tok := range []string{byJTI, bySub} {
		uri, idx := statusOf(t, tok)
		waitFor(t, func() bool { return listStatus(t, p.b, uri, idx) == 1 })
		waitFor(t, func() bool {
			_, err := v.Verify(ctx, tok)
			return errors.Is(err, verify.ErrRevoked)
		})
	}
	uri, idx := statusOf(t, kept)
	if s := listStatus(t, p.a, uri, idx); s != 0 {
		t.Fatalf("unrevoked token: status %d", s)
	}
	if _, err := v.Verify(ctx, kept); err != nil {
		t.Fatalf("verify rejects the unrevoked token: %v", err)
	}
}
