package attest_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
)

// workloadOf returns a Workload whose claims are the JSON object js.
func workloadOf(t testing.TB, js string) *attest.Workload {
	t.Helper()
	c, err := strictjson.DecodeObject([]byte(js), attest.MaxClaimsDepth)
	if err != nil {
		t.Fatalf("claims %s: %v", js, err)
	}
	return &attest.Workload{Claims: c}
}

// nestedAct returns an act claim n levels deep: {"sub":"a0","act":{"sub":"a1",...}}.
func nestedAct(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(`,"act":`)
		}
		b.WriteString(`{"sub":"a` + string(rune('a'+i%26)) + `"`)
	}
	b.WriteString(strings.Repeat("}", n))
	return b.String()
}

func TestActChain(t *testing.T) {
	tests := []struct {
		name    string
		claims  string
		want    []attest.Actor
		wantErr string // "" for success
	}{
		{name: "no act", claims: `{"sub":"user"}`, want: nil},
		{name: "one actor, RFC 8693 §4.1",
			claims: `{"aud":"https://consumer.example.com","iss":"https://issuer.example.com","sub":"user@example.com",
				"act":{"sub":"admin@example.com"}}`,
			want: []attest.Actor{{Subject: "admin@example.com"}}},
		{name: "chain, RFC 8693 §4.1",
			claims: `{"sub":"user@example.com","act":{"sub":"consumer.example.com-web-application",
				"iss":"https://issuer.example.net","act":{"sub":"admin@example.com"}}}`,
			want: []attest.Actor{
				{Subject: "consumer.example.com-web-application", Issuer: "https://issuer.example.net"},
				{Subject: "admin@example.com"},
			}},
		{name: "non-identity members ignored",
			claims: `{"act":{"sub":"spiffe://prod.example/ns/a/sa/b","exp":1,"aud":"x","client_id":"c"}}`,
			want:   []attest.Actor{{Subject: "spiffe://prod.example/ns/a/sa/b"}}},
		{name: "at max depth", claims: `{"act":` + nestedAct(attest.MaxActDepth) + `}`},
		{name: "over max depth", claims: `{"act":` + nestedAct(attest.MaxActDepth+1) + `}`, wantErr: "deeper than 16"},
		{name: "act null", claims: `{"act":null}`, wantErr: "depth 0 is not an object"},
		{name: "act string", claims: `{"act":"admin"}`, wantErr: "not an object"},
		{name: "act array", claims: `{"act":[{"sub":"admin"}]}`, wantErr: "not an object"},
		{name: "act empty object", claims: `{"act":{}}`, wantErr: "sub missing"},
		{name: "sub a number", claims: `{"act":{"sub":1}}`, wantErr: "sub missing or not a string"},
		{name: "sub empty", claims: `{"act":{"sub":""}}`, wantErr: "sub: 0 bytes"},
		{name: "sub with newline", claims: `{"act":{"sub":"a\nb"}}`, wantErr: "forbidden character"},
		{name: "sub with bidi override", claims: `{"act":{"sub":"a\u202eb"}}`, wantErr: "forbidden character"},
		{name: "sub too long", claims: `{"act":{"sub":"` + strings.Repeat("a", attest.MaxSubjectLength+1) + `"}}`, wantErr: "bytes"},
		{name: "iss a number", claims: `{"act":{"sub":"a","iss":7}}`, wantErr: "iss not a string"},
		{name: "iss empty", claims: `{"act":{"sub":"a","iss":""}}`, wantErr: "iss: 0 bytes"},
		{name: "iss null", claims: `{"act":{"sub":"a","iss":null}}`, wantErr: "iss not a string"},
		{name: "bad prior actor", claims: `{"act":{"sub":"a","act":{"iss":"x"}}}`, wantErr: "depth 1: sub missing"},
		{name: "prior actor null", claims: `{"act":{"sub":"a","act":null}}`, wantErr: "depth 1 is not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := workloadOf(t, tt.claims)
			chain, err := w.ActChain()
			if tt.wantErr != "" {
				if !errors.Is(err, attest.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want ErrInvalid saying %q", err, tt.wantErr)
				}
				if chain != nil {
					t.Fatalf("chain %v with an error", chain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && !slices.Equal(chain, tt.want) {
				t.Fatalf("chain %+v, want %+v", chain, tt.want)
			}
			if tt.name == "at max depth" && len(chain) != attest.MaxActDepth {
				t.Fatalf("chain of %d", len(chain))
			}
		})
	}
}

func TestMayAct(t *testing.T) {
	tests := []struct {
		name    string
		claims  string
		want    *attest.Actor
		present bool
		wantErr string
	}{
		{name: "absent", claims: `{"sub":"user"}`},
		{name: "RFC 8693 §4.4", claims: `{"aud":"https://consumer.example.com","iss":"https://issuer.example.com",
			"sub":"user@example.com","may_act":{"sub":"admin@example.com"}}`,
			want: &attest.Actor{Subject: "admin@example.com"}, present: true},
		{name: "with iss", claims: `{"may_act":{"sub":"svc","iss":"https://cluster.example"}}`,
			want: &attest.Actor{Subject: "svc", Issuer: "https://cluster.example"}, present: true},
		{name: "nested act inside ignored", claims: `{"may_act":{"sub":"svc","act":{"sub":"x"}}}`,
			want: &attest.Actor{Subject: "svc"}, present: true},
		{name: "null", claims: `{"may_act":null}`, present: true, wantErr: "not an object"},
		{name: "string", claims: `{"may_act":"admin@example.com"}`, present: true, wantErr: "not an object"},
		{name: "array", claims: `{"may_act":[{"sub":"a"}]}`, present: true, wantErr: "not an object"},
		{name: "identified by client_id only", claims: `{"may_act":{"client_id":"s6BhdRkqt3"}}`, present: true, wantErr: "sub missing"},
		{name: "sub with space", claims: `{"may_act":{"sub":"a b"}}`, present: true, wantErr: "forbidden character"},
		{name: "iss a bool", claims: `{"may_act":{"sub":"a","iss":true}}`, present: true, wantErr: "iss not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, present, err := workloadOf(t, tt.claims).MayAct()
			if present != tt.present {
				t.Fatalf("present %v, want %v", present, tt.present)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, attest.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) || a != nil {
					t.Fatalf("got %v, %v; want ErrInvalid saying %q", a, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (a == nil) != (tt.want == nil) || (a != nil && *a != *tt.want) {
				t.Fatalf("actor %+v, want %+v", a, tt.want)
			}
		})
	}
}

func TestCheckSubject(t *testing.T) {
	for sub, ok := range map[string]bool{
		"system:serviceaccount:prod:api": true,
		"spiffe://prod.example/ns/a":     true,
		"0f8fad5b-d9cb-469f-a165":        true,
		"ünïcödé":                        true,
		strings.Repeat("a", 1024):        true,
		"":                               false,
		strings.Repeat("a", 1025):        false,
		"a b":                            false,
		"a\tb":                           false,
		"a\x00b":                         false,
		"a\u200bb":                       false, // zero-width space (Cf)
		"a\u00a0b":                       false, // no-break space
		"a\xffb":                         false, // invalid UTF-8
	} {
		if err := attest.CheckSubject(sub); (err == nil) != ok {
			t.Errorf("CheckSubject(%q) = %v", sub, err)
		}
	}
}

// FuzzActChain feeds arbitrary claim JSON, decoded as verifiers decode it, to
// ActChain and MayAct: never a panic; on success a chain of 1 to MaxActDepth valid
// actors, one per nested act level; on failure ErrInvalid and nothing else.
func FuzzActChain(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"act":{"sub":"a"}}`,
		`{"act":{"sub":"a","iss":"https://i","act":{"sub":"b","act":{"sub":"c"}}}}`,
		`{"act":` + nestedAct(attest.MaxActDepth+1) + `}`,
		`{"act":null,"may_act":{"sub":"x"}}`,
		`{"act":{"sub":"a","act":[]},"may_act":"x"}`,
		`{"may_act":{"sub":"a\u202e","iss":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := strictjson.DecodeObject(data, attest.MaxClaimsDepth)
		if err != nil {
			return
		}
		w := &attest.Workload{Claims: c}
		chain, err := w.ActChain()
		_, hasAct := c["act"]
		switch {
		case err != nil:
			if !errors.Is(err, attest.ErrInvalid) || chain != nil {
				t.Fatalf("chain %v, error %v", chain, err)
			}
		case !hasAct:
			if chain != nil {
				t.Fatalf("chain %v without act", chain)
			}
		default:
			if len(chain) == 0 || len(chain) > attest.MaxActDepth {
				t.Fatalf("chain of %d", len(chain))
			}
			level := c["act"]
			for i, a := range chain {
				obj := level.(map[string]any)
				if a.Subject != obj["sub"] || attest.CheckSubject(a.Subject) != nil {
					t.Fatalf("actor %d: %+v from %v", i, a, obj)
				}
				if a.Issuer != "" && (a.Issuer != obj["iss"] || attest.CheckSubject(a.Issuer) != nil) {
					t.Fatalf("actor %d: %+v from %v", i, a, obj)
				}
				level = obj["act"]
			}
			if level != nil {
				t.Fatalf("chain stopped before the last act level")
			}
		}
		a, present, err := w.MayAct()
		_, hasMayAct := c["may_act"]
		switch {
		case present != hasMayAct:
			t.Fatalf("present %v, claim present %v", present, hasMayAct)
		case err != nil:
			if !errors.Is(err, attest.ErrInvalid) || a != nil {
				t.Fatalf("actor %v, error %v", a, err)
			}
		case present:
			if a == nil || attest.CheckSubject(a.Subject) != nil {
				t.Fatalf("actor %+v", a)
			}
		case a != nil:
			t.Fatalf("actor %+v without may_act", a)
		}
	})
}
