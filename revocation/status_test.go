package revocation

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

func TestStatusListRoundTrip(t *testing.T) {
	for _, bits := range []int{1, 2, 4, 8} {
		statuses := make([]byte, 4096)
		for i := range statuses {
			statuses[i] = byte(i*7+3) % byte(1<<bits-1|1)
			if bits == 8 {
				statuses[i] = byte(i)
			}
		}
		lst, err := EncodeStatusList(statuses, bits)
		if err != nil {
			t.Fatal(err)
		}
		// DEFLATE in the ZLIB format (RFC 1950): compress/zlib reads it back.
		comp, err := base64.RawURLEncoding.Strict().DecodeString(lst)
		if err != nil {
			t.Fatal(err)
		}
		if comp[0]&0x0f != 8 || (uint16(comp[0])<<8|uint16(comp[1]))%31 != 0 {
			t.Fatalf("bits %d: not a ZLIB header: % x", bits, comp[:2])
		}
		zr, err := zlib.NewReader(bytes.NewReader(comp))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(zr)
		if len(raw) != 4096*bits/8 {
			t.Fatalf("bits %d: %d bytes", bits, len(raw))
		}
		l, err := DecodeStatusList(lst, bits, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if l.Len() != 4096 {
			t.Fatalf("len %d", l.Len())
		}
		for i, want := range statuses {
			got, err := l.Status(i)
			if err != nil || got != want&byte(1<<bits-1) {
				t.Fatalf("bits %d idx %d: %d %v, want %d", bits, i, got, err, want)
			}
		}
		for _, idx := range []int{-1, 4096, 1 << 30} {
			if _, err := l.Status(idx); !errors.Is(err, ErrStatusIndex) {
				t.Fatalf("idx %d: %v, want ErrStatusIndex", idx, err)
			}
		}
	}
}

// The draft's example: statuses 1,0,0,1,1,1,0,1 (idx 0..7) then 1,1,0,0,0,1,0,1
// pack into the bytes B9 A3 (index 0 in the least significant bit).
func TestStatusListBitOrder(t *testing.T) {
	lst, err := EncodeStatusList([]byte{1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := base64.RawURLEncoding.DecodeString(lst)
	zr, _ := zlib.NewReader(bytes.NewReader(comp))
	raw, _ := io.ReadAll(zr)
	if !bytes.Equal(raw, []byte{0xB9, 0xA3}) {
		t.Fatalf("% X, want B9 A3", raw)
	}
}

func TestDecodeStatusListRefuses(t *testing.T) {
	gz := func(b []byte) string { // raw DEFLATE would not do: only ZLIB
		var buf bytes.Buffer
		w := zlib.NewWriter(&buf)
		_, _ = w.Write(b)
		_ = w.Close()
		return base64.RawURLEncoding.EncodeToString(buf.Bytes())
	}
	for name, tc := range map[string]struct {
		lst  string
		bits int
	}{
		"empty":          {"", 1},
		"padding":        {gz([]byte{1}) + "=", 1},
		"std alphabet":   {"+/+/", 1},
		"not zlib":       {base64.RawURLEncoding.EncodeToString([]byte("plain bytes")), 1},
		"bits 3":         {gz([]byte{1}), 3},
		"too large":      {gz(make([]byte, 2048)), 1},
		"empty list":     {gz(nil), 1},
		"truncated zlib": {gz([]byte{1, 2, 3})[:6], 1},
	} {
		if _, err := DecodeStatusList(tc.lst, tc.bits, 1024); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeStatusList(f *testing.F) {
	lst, _ := EncodeStatusList([]byte{1, 0, 1, 1}, 1)
	f.Add(lst, 1, 3)
	f.Add("eNrbuRgAAhcBXQ", 2, 0)
	f.Add("", 8, 100)
	f.Fuzz(func(t *testing.T, lst string, bits, idx int) {
		l, err := DecodeStatusList(lst, bits, 1<<16)
		if err != nil {
			return
		}
		s, err := l.Status(idx)
		if err != nil {
			if !errors.Is(err, ErrStatusIndex) || (idx >= 0 && idx < l.Len()) {
				t.Fatalf("idx %d of %d: %v", idx, l.Len(), err)
			}
			return
		}
		if int(s) >= 1<<l.Bits {
			t.Fatalf("status %d with %d bits", s, l.Bits)
		}
	})
}

func TestStatusEvaluator(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	jti := "AAECAwQFBgcICQoLDA0ODw" // 16 bytes
	other := "EBESExQVFhcYGRobHB0eHw"
	wl := Facts{Subject: "spiffe://prod/payments", Upstream: "spire", ClientID: "spiffe://prod/payments",
		Audiences: []string{"https://ledger"}, Attributes: map[string]string{"ns": "payments"}, KeyID: "k1"}
	other2 := wl
	other2.Subject, other2.ClientID = "spiffe://prod/billing", "spiffe://prod/billing"
	cid, cenc := EncodeStatusClass(&wl)
	oid, oenc := EncodeStatusClass(&other2)
	classes := map[string]Facts{}
	for id, enc := range map[string][]byte{cid: cenc, oid: oenc} {
		f, err := DecodeStatusClass(enc)
		if err != nil {
			t.Fatal(err)
		}
		classes[id] = f
	}
	if classes[cid].TrustDomain != "prod" {
		t.Fatalf("trust domain %q", classes[cid].TrustDomain)
	}
	iat := now.Add(-time.Minute)
	rec := func(idx uint32, jti, class string, iat time.Time) []byte {
		return AppendStatusRecord(nil, StatusRecord{Index: idx, IssuedAt: iat, JTI: jti, Class: class})
	}
	created := now.Add(-30 * time.Second)
	entry := func(sel string) Entry {
		return Entry{ID: sel, Kind: KindRevoke, Selector: sel, Created: created, Expires: now.Add(time.Hour)}
	}
	for _, tc := range []struct {
		name    string
		entries []Entry
		record  []byte
		want    byte
	}{
		{"no entries", nil, rec(3, jti, cid, iat), StatusValid},
		{"by jti", []Entry{entry("jti=" + jti)}, rec(3, jti, cid, iat), StatusInvalid},
		{"by other jti", []Entry{entry("jti=" + other)}, rec(3, jti, cid, iat), StatusValid},
		{"by jti and other sub", []Entry{entry("jti=" + jti + ",sub=spiffe://prod/billing")}, rec(3, jti, cid, iat), StatusValid},
		{"by sub", []Entry{entry("sub=spiffe://prod/payments")}, rec(3, jti, cid, iat), StatusInvalid},
		{"by sub, other workload", []Entry{entry("sub=spiffe://prod/payments")}, rec(3, jti, oid, iat), StatusValid},
		{"by sub glob", []Entry{entry("sub=spiffe://prod/*")}, rec(3, jti, oid, iat), StatusInvalid},
		{"by trust domain", []Entry{entry("trust_domain=prod")}, rec(3, jti, cid, iat), StatusInvalid},
		{"by attribute", []Entry{entry("attr.ns=payments")}, rec(3, jti, cid, iat), StatusInvalid},
		{"by aud", []Entry{entry("aud=https://ledger")}, rec(3, jti, cid, iat), StatusInvalid},
		{"issued after the revoke", []Entry{entry("sub=spiffe://prod/payments")}, rec(3, jti, cid, now), StatusValid},
		{"by kid, issued after", []Entry{entry("kid=k1")}, rec(3, jti, cid, now), StatusInvalid},
		{"by other kid", []Entry{entry("kid=k2")}, rec(3, jti, cid, iat), StatusValid},
		{"lifted", []Entry{func() Entry { e := entry("sub=spiffe://prod/payments"); e.Lifted = true; return e }()}, rec(3, jti, cid, iat), StatusValid},
		{"expired", []Entry{func() Entry { e := entry("sub=spiffe://prod/payments"); e.Expires = now; return e }()}, rec(3, jti, cid, iat), StatusValid},
		{"a block", []Entry{func() Entry { e := entry("sub=spiffe://prod/payments"); e.Kind = KindBlock; return e }()}, rec(3, jti, cid, iat), StatusValid},
		{"unparseable entry", []Entry{entry("??")}, rec(3, jti, cid, iat), StatusInvalid},
		{"class missing", nil, rec(3, jti, "\x00\x01\x02\x03\x04\x05\x06\x07", iat), StatusInvalid},
		{"jti glob", []Entry{entry("jti=AAEC*,sub=spiffe://prod/payments")}, rec(3, jti, cid, iat), StatusInvalid},
	} {
		statuses := make([]byte, 8)
		statuses[5] = 9 // no record: left alone
		NewStatusEvaluator(tc.entries, now).Evaluate(tc.record, classes, statuses)
		if statuses[3] != tc.want || statuses[5] != 9 {
			t.Errorf("%s: status %d (untouched %d), want %d", tc.name, statuses[3], statuses[5], tc.want)
		}
	}
	// An index beyond the list is ignored.
	statuses := make([]byte, 2)
	NewStatusEvaluator([]Entry{entry("jti=" + jti)}, now).Evaluate(rec(7, jti, cid, iat), classes, statuses)
	if !bytes.Equal(statuses, []byte{0, 0}) {
		t.Fatalf("%v", statuses)
	}
}

// BenchmarkStatusList10e6 is the cost of one list rebuild at 10^6 live tokens in
// one list of 2^20 indices (random indices, 1,000 workload classes), with 1% or
// 10% of them revoked (by jti, and by subject for 1 in 100 classes in the 10%
// case): evaluation, packing, ZLIB compression. lst-bytes is the size of the
// encoded list (the Status List Token adds about 300 bytes).
func BenchmarkStatusList10e6(b *testing.B) {
	for _, pct := range []int{1, 10} {
		b.Run(itoa(pct)+"pct", func(b *testing.B) { benchStatusList(b, pct) })
	}
}

func benchStatusList(b *testing.B, pct int) {
	now := time.Unix(1_800_000_000, 0)
	rng := rand.New(rand.NewPCG(1, uint64(pct)))
	classes := map[string]Facts{}
	var ids []string
	for i := range 1000 {
		f := Facts{Subject: "spiffe://prod/ns/" + itoa(i) + "/sa/api", Upstream: "spire", Audiences: []string{"https://ledger"}, KeyID: "k1"}
		id, enc := EncodeStatusClass(&f)
		f2, _ := DecodeStatusClass(enc)
		classes[id] = f2
		ids = append(ids, id)
	}
	perm := rng.Perm(1 << 20)
	var recs []byte
	var entries []Entry
	jtiShare := pct
	if pct == 10 {
		jtiShare = 9 // and 1% by subject: 10 of 1,000 classes
		for i := range 10 {
			entries = append(entries, Entry{ID: "s" + itoa(i), Kind: KindRevoke, Selector: "sub=spiffe://prod/ns/" + itoa(i) + "/sa/api", Created: now, Expires: now.Add(time.Hour)})
		}
	}
	for i := range 1_000_000 {
		var raw [16]byte
		for j := range raw {
			raw[j] = byte(rng.Uint32())
		}
		jti := base64.RawURLEncoding.EncodeToString(raw[:])
		if rng.IntN(100) < jtiShare {
			entries = append(entries, Entry{ID: "j" + itoa(i), Kind: KindRevoke, Selector: "jti=" + jti, Created: now, Expires: now.Add(time.Hour)})
		}
		recs = AppendStatusRecord(recs, StatusRecord{Index: uint32(perm[i]), IssuedAt: now.Add(-time.Minute), JTI: jti, Class: ids[rng.IntN(len(ids))]})
	}
	b.ReportAllocs()
	var size, invalid int
	for b.Loop() {
		statuses := make([]byte, 1<<20)
		NewStatusEvaluator(entries, now).Evaluate(recs, classes, statuses)
		lst, err := EncodeStatusList(statuses, 1)
		if err != nil {
			b.Fatal(err)
		}
		size = len(lst)
		invalid = 0
		for _, st := range statuses {
			invalid += int(st)
		}
	}
	b.ReportMetric(float64(invalid), "invalid")
	b.ReportMetric(float64(size), "lst-bytes")
	b.ReportMetric(float64(len(recs)), "record-bytes")
}

func itoa(i int) string {
	return string(appendInt(nil, i))
}

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}
