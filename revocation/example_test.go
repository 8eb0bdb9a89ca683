package revocation_test

import (
	"fmt"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

func ExampleParseSelector() {
	sel, err := revocation.ParseSelector(`upstream=corp,sub=spiffe://corp.example/ns/prod/*,attr.team="a,b"`)
	if err != nil {
		panic(err)
	}
	fmt.Println(sel)
	fmt.Println(sel.Anchor())

	f := revocation.FactsFromClaims(map[string]any{
		"sub":        "spiffe://corp.example/ns/prod/sa/api",
		"upstream":   "corp",
		"attributes": map[string]any{"team": "a,b"},
	})
	fmt.Println(sel.Match(&f), f.TrustDomain)
	// Output:
	// attr.team="a,b",sub=spiffe://corp.example/ns/prod/*,upstream=corp
	// attr.team=a,b
	// true corp.example
}

func ExampleEntry_Invalidates() {
	created := time.Date(2030, 1, 1, 12, 0, 0, 300e6, time.UTC)
	e := revocation.Entry{ID: "e1", Kind: revocation.KindRevoke, Selector: "sub=alice", Created: created}
	for _, iat := range []time.Time{created.Add(-time.Hour), created.Add(500 * time.Millisecond), created.Add(time.Second)} {
		f := &revocation.Facts{Subject: "alice", IssuedAt: iat}
		fmt.Println(iat.Format("15:04:05.000"), e.Invalidates(f, created))
	}
	// Output:
	// 11:00:00.300 true
	// 12:00:00.800 true
	// 12:00:01.300 false
}
