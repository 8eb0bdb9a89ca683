package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/safeconduct/safeconduct/internal/testredis"
	"github.com/safeconduct/safeconduct/revocation"
)

// statusRef reads the status claim of a minted token.
func statusRef(t *testing.T, tok string) (uri string, idx int) {
	t.Helper()
	c := decodeSegment(t, tok, 1)
	st, _ := c["status"].(map[string]any)
	sl, _ := st["status_list"].(map[string]any)
	uri, _ = sl["uri"].(string)
	f, ok := sl["idx"].(float64)
	if uri == "" || !ok {
		t.Fatalf("no status.status_list in %v", c)
	}
	return uri, int(f)
}

// fetchStatus GETs a list from base+path(uri), checks the Status List Token
// (header, signature against the STS JWKS, claims) and returns the status at idx.
func fetchStatus(t *testing.T, ts *testSTS, uri string, idx int) byte {
	t.Helper()
	path := strings.TrimPrefix(uri, ts.url)
	if !strings.HasPrefix(uri, "https://") || !strings.HasPrefix(path, PathStatusLists) {
		path = uri[strings.Index(uri, PathStatusLists):]
	}
	r := ts.do(t, http.MethodGet, path, "", "", func(r *http.Request) { r.Header.Set("Accept", "application/statuslist+jwt") })
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", path, r.status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/statuslist+jwt" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") {
		t.Fatalf("Cache-Control %q", cc)
	}
	jws, err := jose.ParseSignedCompact(r.raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.EdDSA, jose.PS256})
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.Signatures[0].Header
	if hdr.ExtraHeaders["typ"] != "statuslist+jwt" {
		t.Fatalf("typ %v", hdr.ExtraHeaders["typ"])
	}
	jr := ts.do(t, http.MethodGet, PathJWKS, "", "", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(jr.raw), &set); err != nil {
		t.Fatal(err)
	}
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in the JWKS", hdr.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	var c struct {
		Sub        string `json:"sub"`
		Iat, Exp   int64
		TTL        int64 `json:"ttl"`
		StatusList struct {
			Bits int    `json:"bits"`
			Lst  string `json:"lst"`
		} `json:"status_list"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(c.Sub, path) || c.Iat == 0 || c.Exp <= c.Iat || c.TTL <= 0 || c.TTL > 60 || c.StatusList.Bits != 1 {
		t.Fatalf("claims %+v (path %s)", c, path)
	}
	l, err := revocation.DecodeStatusList(c.StatusList.Lst, c.StatusList.Bits, 1<<21)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Status(idx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitStatus polls the list until idx has status want (bounded, not timed).
func waitStatus(t *testing.T, ts *testSTS, uri string, idx int, want byte) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := fetchStatus(t, ts, uri, idx)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s[%d] stays %d, want %d", uri, idx, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestStatusListEmbedded(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "status_lists: {ttl: 2s}\n"})
	testStatusList(t, ts, ts)
}

func TestStatusListRedisTwoReplicas(t *testing.T) {
	addr := testredis.Start(t)
	rev := fmt.Sprintf("revocation:\n  backend: redis\n  redis: {addrs: [%q], prefix: %s}\n", addr, testredis.Prefix(t))
	a := startSTS(t, stsOptions{revocation: rev, extra: "status_lists: {ttl: 2s}\n"})
	b := startSTS(t, stsOptions{revocation: rev, extra: "status_lists: {ttl: 2s}\n"})
	testStatusList(t, a, b)
}

// testStatusList mints on a and reads the lists on b (a itself for one replica).
func testStatusList(t *testing.T, a, b *testSTS) {
	mint := func(sub string) string {
		t.Helper()
		r := a.post(t, a.form(a.a.Token(t, sub)))
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.raw)
		}
		return r.body["access_token"].(string)
	}
	byJTI, bySub, kept := mint(payments), mint("system:serviceaccount:payments:worker"), mint(payments)
	seen := map[string]bool{}
	var uris []string
	var idxs []int
	for _, tok := range []string{byJTI, bySub, kept} {
		uri, idx := statusRef(t, tok)
		if !strings.HasPrefix(uri, a.url+PathStatusLists) {
			t.Fatalf("uri %q", uri)
		}
		k := fmt.Sprint(uri, idx)
		if seen[k] {
			t.Fatalf("index %s given twice", k)
		}
		seen[k] = true
		uris, idxs = append(uris, uri), append(idxs, idx)
		if got := fetchStatus(t, b, uri, idx); got != revocation.StatusValid {
			t.Fatalf("fresh token has status %d", got)
		}
	}
	ctx := context.Background()
	jti := decodeSegment(t, byJTI, 1)["jti"].(string)
	for _, sel := range []string{"jti=" + jti, "sub=system:serviceaccount:payments:worker"} {
		if _, err := a.srv.core.store.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: sel, Reason: "test", Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus(t, b, uris[0], idxs[0], revocation.StatusInvalid)
	waitStatus(t, b, uris[1], idxs[1], revocation.StatusInvalid)
	if got := fetchStatus(t, b, uris[2], idxs[2]); got != revocation.StatusValid {
		t.Fatalf("unrevoked token has status %d", got)
	}

	// Protocol edges.
	name := uris[0][strings.LastIndex(uris[0], "/")+1:]
	for _, tc := range []struct {
		path, accept string
		status       int
	}{
		{PathStatusLists + "20-AAAAAAAAAAAAAAAAAAAAAA", "application/statuslist+jwt", 404},
		{PathStatusLists + "nonsense", "application/statuslist+jwt", 404},
		{PathStatusLists + name, "application/statuslist+cwt", 406},
		{PathStatusLists + name, "application/json", 406},
		{PathStatusLists + name, "application/statuslist+cwt, */*;q=0.1", 200},
		{PathStatusLists + name, "", 200},
	} {
		r := b.do(t, http.MethodGet, tc.path, "", "", func(r *http.Request) {
			if tc.accept != "" {
				r.Header.Set("Accept", tc.accept)
			}
		})
		if r.status != tc.status {
			t.Errorf("GET %s (Accept %q): %d, want %d", tc.path, tc.accept, r.status, tc.status)
		}
	}
}

func TestStatusListIndicesUnique(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "status_lists: {size: 1024}\n"})
	seen := map[string]bool{}
	lists := map[string]bool{}
	for range 40 {
		r := ts.post(t, ts.form(ts.a.Token(t, payments)))
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.raw)
		}
		uri, idx := statusRef(t, r.body["access_token"].(string))
		if idx < 0 || idx >= 1024 || seen[fmt.Sprint(uri, idx)] {
			t.Fatalf("index %d of %s: out of range or given twice", idx, uri)
		}
		seen[fmt.Sprint(uri, idx)] = true
		lists[uri] = true
	}
	if len(lists) != 1 {
		t.Fatalf("%d lists for 40 tokens in one window", len(lists))
	}
}

func TestStatusListOff(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "status_lists: {enabled: false}\n"})
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	if _, ok := decodeSegment(t, r.body["access_token"].(string), 1)["status"]; ok {
		t.Fatal("status claim with status lists off")
	}
	if r := ts.do(t, http.MethodGet, PathStatusLists+"20-AAAAAAAAAAAAAAAAAAAAAA", "", "", nil); r.status != 404 {
		t.Fatalf("list endpoint with status lists off: %d", r.status)
	}
}

func TestPermuteIsABijection(t *testing.T) {
	for _, w := range []int{10, 11, 12} {
		ol := (&statusLists{core: &core{}, cfg: StatusListConfig{Size: 1 << w, RotateAfter: time.Hour}}).newOpenList(time.Now())
		seen := make([]bool, 1<<w)
		inOrder := 0
		for n := range uint32(1 << w) {
			x := permute(ol.perm, w, n, &ol.scratch)
			if x >= 1<<w || seen[x] {
				t.Fatalf("width %d: %d -> %d (out of range or repeated)", w, n, x)
			}
			seen[x] = true
			if x == n {
				inOrder++
			}
		}
		if inOrder > 1<<w/8 {
			t.Fatalf("width %d: %d fixed points: not shuffled", w, inOrder)
		}
	}
}

// TestStatusListSealedAndOrphaned: records are written behind issuance, so an
// index without a record is VALID only while its list's writer is alive and has
// not sealed it. Once sealed (rotation, shutdown) or orphaned (no heartbeat for
// writerSilence: the writer crashed with records unwritten), such an index is
// INVALID; recorded ones keep their status.
func TestStatusListSealedAndOrphaned(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "status_lists: {ttl: 2s, size: 1024}\n"})
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	uri, idx := statusRef(t, r.body["access_token"].(string))
	other := (idx + 1) % 1024 // no token holds it
	if got := fetchStatus(t, ts, uri, other); got != revocation.StatusValid {
		t.Fatalf("unrecorded index of a live, unsealed list: %d", got)
	}
	// Orphaned: a list whose writer stopped writing long ago.
	st := ts.srv.core.status.store
	f := revocation.Facts{Subject: payments, Upstream: "cluster-a"}
	cid, cenc := revocation.EncodeStatusClass(&f)
	now := time.Now()
	rec := revocation.AppendStatusRecord(nil, revocation.StatusRecord{Index: 5, IssuedAt: now, JTI: newTokenID(), Class: cid})
	orphan := "10-" + strings.Repeat("A", 22)
	if err := st.AppendStatus(context.Background(), orphan, now.Add(time.Hour), map[string][]byte{cid: cenc}, rec,
		revocation.StatusMeta{Heartbeat: now.Add(-writerSilence - time.Second)}); err != nil {
		t.Fatal(err)
	}
	ouri := ts.url + PathStatusLists + orphan
	if got := fetchStatus(t, ts, ouri, 5); got != revocation.StatusValid {
		t.Fatalf("recorded index of an orphaned list: %d", got)
	}
	if got := fetchStatus(t, ts, ouri, 6); got != revocation.StatusInvalid {
		t.Fatalf("unrecorded index of an orphaned list: %d, want INVALID", got)
	}
	// Sealed at shutdown: the token keeps VALID, the unrecorded index turns INVALID.
	if err := ts.srv.core.status.close(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ts, uri, other, revocation.StatusInvalid)
	if got := fetchStatus(t, ts, uri, idx); got != revocation.StatusValid {
		t.Fatalf("issued token after sealing: %d", got)
	}
}

// TestStatusListAfterRFC7009Revoke: a token its holder revoked at /revoke
// (RFC 7009) turns INVALID in its status list.
func TestStatusListAfterRFC7009Revoke(t *testing.T) {
	ts := startSTS(t, stsOptions{extra: "status_lists: {ttl: 2s}\n"})
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	tok := r.body["access_token"].(string)
	uri, idx := statusRef(t, tok)
	if rr := ts.do(t, http.MethodPost, "/revoke", "application/x-www-form-urlencoded", url.Values{"token": {tok}}.Encode(), nil); rr.status != 200 {
		t.Fatalf("/revoke: %d %s", rr.status, rr.raw)
	}
	waitStatus(t, ts, uri, idx, revocation.StatusInvalid)
}

// TestClassCache: the cached class of a subject is used only for facts of the
// same class; any other fact changed gives EncodeStatusClass's answer.
func TestClassCache(t *testing.T) {
	base := func() *revocation.Facts {
		return &revocation.Facts{Subject: "s", Upstream: "u", ClientID: "c", Audiences: []string{"a1", "a2"},
			Attributes: map[string]string{"ns": "payments"}, Binding: "b", KeyID: "k1"}
	}
	edits := map[string]func(*revocation.Facts){
		"none":            func(*revocation.Facts) {},
		"upstream":        func(f *revocation.Facts) { f.Upstream = "u2" },
		"client":          func(f *revocation.Facts) { f.ClientID = "c2" },
		"audience":        func(f *revocation.Facts) { f.Audiences = []string{"a1"} },
		"audience order":  func(f *revocation.Facts) { f.Audiences = []string{"a2", "a1"} },
		"attribute value": func(f *revocation.Facts) { f.Attributes = map[string]string{"ns": "billing"} },
		"attribute added": func(f *revocation.Facts) { f.Attributes["pod"] = "p" },
		"no attributes":   func(f *revocation.Facts) { f.Attributes = nil },
		"binding":         func(f *revocation.Facts) { f.Binding = "b2" },
		"kid":             func(f *revocation.Facts) { f.KeyID = "k2" },
	}
	for name, edit := range edits {
		var c classCache
		first := base()
		c.encode(first)
		first.Attributes["ns"] = "changed after" // the cache kept a copy
		f := base()
		edit(f)
		gotID, gotEnc := c.encode(f)
		wantID, wantEnc := revocation.EncodeStatusClass(f)
		if gotID != wantID || string(gotEnc) != string(wantEnc) {
			t.Errorf("%s: cached class %s, want %s", name, gotEnc, wantEnc)
		}
		if again, _ := c.encode(f); again != wantID {
			t.Errorf("%s: second lookup gave another class", name)
		}
	}
}

// TestStatusListUnknownNames: names the store does not hold are answered 404
// without taking a place among the lists served, so a client asking for made-up
// names evicts no list; and each client address has a bucket of its own
// (limits.admin_per_ip_rps, admin_burst) beyond which it gets 429.
func TestStatusListUnknownNames(t *testing.T) {
	const burst = 20
	ts := startSTS(t, stsOptions{extra: fmt.Sprintf("status_lists: {ttl: 2s}\nlimits: {admin_per_ip_rps: 0.001, admin_burst: %d}\n", burst)})
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	uri, idx := statusRef(t, r.body["access_token"].(string))
	fetchStatus(t, ts, uri, idx) // served from now on
	get := func(path string) *reply {
		return ts.do(t, http.MethodGet, path, "", "", func(r *http.Request) { r.Header.Set("Accept", "application/statuslist+jwt") })
	}
	sl := ts.srv.core.status
	name := strings.TrimPrefix(uri, ts.url+PathStatusLists)
	// The served list is the least recently used of a full set: any new entry
	// would evict it.
	sl.smu.Lock()
	real := sl.served[name]
	if real == nil {
		sl.smu.Unlock()
		t.Fatalf("list %s not served", name)
	}
	real.lastUsed = time.Unix(0, 0)
	for i := 0; len(sl.served) < maxServedLists; i++ {
		sl.served[fmt.Sprintf("filler-%d", i)] = &servedList{lastUsed: time.Now()}
	}
	sl.smu.Unlock()
	requests := 1
	for i := range 10 {
		path := PathStatusLists + fmt.Sprintf("10-%021dA", i)
		if r := get(path); r.status != http.StatusNotFound {
			t.Fatalf("GET %s: %d, want 404", path, r.status)
		}
		requests++
	}
	sl.smu.Lock()
	kept, n := sl.served[name] == real, len(sl.served)
	sl.smu.Unlock()
	if !kept || n != maxServedLists {
		t.Fatalf("after unknown names: the served list kept %v, %d lists served", kept, n)
	}
	for ; requests < burst; requests++ {
		if r := get(PathStatusLists + name); r.status != 200 {
			t.Fatalf("request %d: %d within the burst", requests+1, r.status)
		}
	}
	r = get(PathStatusLists + name)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("request %d beyond the burst: %d (Retry-After %q), want 429", burst+1, r.status, r.header.Get("Retry-After"))
	}
	if got, _ := metricValue(t, ts.metrics(t), "safeconduct_status_list_rate_limited_total"); got != 1 {
		t.Errorf("safeconduct_status_list_rate_limited_total = %v, want 1", got)
	}
}

// flakyStatusStore is the server's store whose status writes fail while fail is
// set (a full disk, a store refusing writes), everything else untouched.
type flakyStatusStore struct {
	revocation.Store
	status revocation.StatusStore
	fail   atomic.Bool
}

func (f *flakyStatusStore) AppendStatus(ctx context.Context, list string, expires time.Time, classes map[string][]byte, records []byte, meta revocation.StatusMeta) error {
	if f.fail.Load() {
		return errors.New("no space left on device")
	}
	return f.status.AppendStatus(ctx, list, expires, classes, records, meta)
}

func (f *flakyStatusStore) ReadStatus(ctx context.Context, list string, offset int) ([]byte, map[string][]byte, revocation.StatusMeta, bool, error) {
	return f.status.ReadStatus(ctx, list, offset)
}

// TestStatusWritesFailingRefuseExchanges: tokens are issued while their records
// are written behind them; once writes have failed for flushFailLimit, exchanges
// are refused with 503 (a token whose record may be lost is not handed out), and
// they are issued again as soon as a write succeeds.
func TestStatusWritesFailingRefuseExchanges(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	c := ts.srv.core
	if err := c.status.close(); err != nil {
		t.Fatal(err)
	}
	store := &flakyStatusStore{Store: c.store, status: c.status.store}
	sl, err := newStatusLists(c, StatusListConfig{TTL: 2 * time.Second, FlushInterval: 20 * time.Millisecond}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sl.close() })
	c.status = sl // no request is in flight
	exchange := func() *reply {
		t.Helper()
		return ts.post(t, ts.form(ts.a.Token(t, payments)))
	}
	if r := exchange(); r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	store.fail.Store(true)
	failedAt := time.Now()
	if r := exchange(); r.status != 200 {
		t.Fatalf("exchange while writes just started failing: %d %s", r.status, r.raw)
	}
	var r *reply
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r = exchange(); r.status != 200 {
			break
		}
	}
	if r.status != http.StatusServiceUnavailable || r.body["error"] != "temporarily_unavailable" {
		t.Fatalf("exchange while status writes fail: %d %s", r.status, r.raw)
	}
	if since := time.Since(failedAt); since < flushFailLimit {
		t.Fatalf("refused %v after writes began failing, before flushFailLimit (%v)", since, flushFailLimit)
	}
	if ev := lastEvent(t, ts, "exchange"); ev["outcome"] != "refused" || !strings.Contains(fmt.Sprint(ev["reason"]), "status list") {
		t.Errorf("audit event of the refusal: %v", ev)
	}
	store.fail.Store(false)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r = exchange(); r.status == 200 {
			return
		}
	}
	t.Fatalf("exchanges still refused after writes recovered: %d %s", r.status, r.raw)
}
