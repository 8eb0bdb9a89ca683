package jwtcore

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// FuzzClaims runs the claim checks over arbitrary (verified, hence decoded) JSON
// claims: they never panic, and what they accept obeys the rules.
func FuzzClaims(f *testing.F) {
	for _, s := range []string{
		`{"exp":1700000060,"aud":"sts"}`,
		`{"exp":1700000060,"nbf":1700000000,"iat":1699999000,"aud":["x","sts"]}`,
		`{"exp":1e300,"iat":-1,"aud":[]}`,
		`{"exp":"1700000060","aud":[null]}`,
		`{"exp":1700000000.5,"iat":1700000030.999,"aud":{"sts":1}}`,
	} {
		f.Add([]byte(s), int64(30), int64(3600))
	}
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte, skewSec, maxAgeSec int64) {
		var c map[string]any
		if json.Unmarshal(data, &c) != nil {
			return
		}
		r := TimeRules{Skew: time.Duration(skewSec%120) * time.Second, MaxAge: time.Duration(maxAgeSec%100000) * time.Second}
		if r.Skew < 0 || r.MaxAge < 0 {
			return
		}
		if tm, err := CheckTimes(c, now, r); err == nil {
			if !now.Before(tm.Expiry.Add(r.Skew)) {
				t.Fatalf("accepted exp %v at %v with skew %v", tm.Expiry, now, r.Skew)
			}
			if tm.NotBefore.After(now.Add(r.Skew)) || tm.IssuedAt.After(now.Add(r.Skew)) {
				t.Fatalf("accepted nbf %v / iat %v in the future", tm.NotBefore, tm.IssuedAt)
			}
			if r.MaxAge > 0 && (tm.IssuedAt.IsZero() || now.Sub(tm.IssuedAt) > r.MaxAge+r.Skew) {
				t.Fatalf("accepted iat %v beyond max age %v", tm.IssuedAt, r.MaxAge)
			}
		}
		accepted := []string{"sts"}
		if aud, err := CheckAudience(c, accepted); err == nil && !slices.Contains(aud, "sts") {
			t.Fatalf("accepted aud %v", aud)
		}
		if _, err := CheckAudience(c, nil); err == nil {
			t.Fatal("accepted an audience with no expectation")
		}
	})
}
