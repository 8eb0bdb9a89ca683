package attrs_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/safeconduct/safeconduct/attest/attrs"
)

func TestGuardCheck(t *testing.T) {
	k8s := []string{"namespace", "service_account", "pod", "sub", "iss"}
	tests := []struct {
		name   string
		cfg    attrs.GuardConfig
		claims string
		attrs  map[string]string
		// refused names the failed check ("" admits).
		refused string
		detail  string
	}{
		{name: "no condition, no bounds: nil guard admits", claims: `{}`},
		{name: "condition true",
			cfg:    attrs.GuardConfig{Condition: `attributes.namespace == "dev" && claims["kubernetes.io"].pod.name.startsWith("api-")`},
			claims: `{"kubernetes.io":{"pod":{"name":"api-1"}}}`, attrs: map[string]string{"namespace": "dev"}},
		{name: "condition false",
			cfg:    attrs.GuardConfig{Condition: `attributes.namespace == "dev"`},
			claims: `{}`, attrs: map[string]string{"namespace": "payments"}, refused: "condition", detail: "not satisfied"},
		{name: "condition over an absent attribute fails closed",
			cfg:    attrs.GuardConfig{Condition: `attributes.namespace == "dev"`},
			claims: `{}`, attrs: map[string]string{}, refused: "condition", detail: "no such key"},
		{name: "guarded absent attribute",
			cfg:    attrs.GuardConfig{Condition: `!("namespace" in attributes) || attributes.namespace == "dev"`},
			claims: `{}`, attrs: map[string]string{}},
		{name: "claim of the wrong type fails closed",
			cfg:    attrs.GuardConfig{Condition: `claims.event_name == "push"`},
			claims: `{"event_name":7}`, refused: "condition"},
		{name: "dyn result that is not a bool fails closed",
			cfg:    attrs.GuardConfig{Condition: `claims.flag`},
			claims: `{"flag":"true"}`, refused: "condition", detail: "not a bool"},
		{name: "cost limit fails closed",
			cfg:    attrs.GuardConfig{Condition: `claims.groups.exists(g, claims.groups.exists(h, g + h == "never"))`},
			claims: `{"groups":[` + strings.Repeat(`"group",`, 1999) + `"group"]}`, refused: "condition", detail: "cost limit"},
		{name: "bound within",
			cfg:    attrs.GuardConfig{AttributeBounds: map[string][]string{"namespace": {"dev", "dev-*"}}},
			claims: `{}`, attrs: map[string]string{"namespace": "dev-2"}},
		{name: "bound outside",
			cfg:    attrs.GuardConfig{AttributeBounds: map[string][]string{"namespace": {"dev", "dev-*"}}},
			claims: `{}`, attrs: map[string]string{"namespace": "payments"}, refused: "attribute_bounds.namespace", detail: `"payments" is outside`},
		{name: "bound on an absent attribute admits",
			cfg:    attrs.GuardConfig{AttributeBounds: map[string][]string{"namespace": {"dev"}}},
			claims: `{}`, attrs: map[string]string{}},
		{name: "bounds are checked before the condition",
			cfg:    attrs.GuardConfig{Condition: `false`, AttributeBounds: map[string][]string{"namespace": {"dev"}}},
			claims: `{}`, attrs: map[string]string{"namespace": "x"}, refused: "attribute_bounds.namespace"},
		{name: "known names accepted",
			cfg:    attrs.GuardConfig{Condition: `attributes["pod"] != "" && "sub" in attributes`, Known: k8s, AttributeBounds: map[string][]string{"service_account": {"api"}}},
			claims: `{}`, attrs: map[string]string{"pod": "p", "sub": "s", "service_account": "api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := attrs.NewGuard(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ref := g.Check(claimsOf(t, tt.claims), tt.attrs)
			switch {
			case tt.refused == "" && ref != nil:
				t.Fatalf("refused: %v", ref)
			case tt.refused != "" && ref == nil:
				t.Fatalf("admitted, want refusal by %s", tt.refused)
			case ref != nil && (ref.Check != tt.refused || !strings.Contains(ref.Detail, tt.detail)):
				t.Fatalf("refusal %q: %q, want %q containing %q", ref.Check, ref.Detail, tt.refused, tt.detail)
			}
		})
	}
}

func TestGuardProblems(t *testing.T) {
	known := []string{"namespace", "sub", "iss"}
	tests := []struct {
		name string
		cfg  attrs.GuardConfig
		want []string // path: message fragments, in order
	}{
		{name: "syntax", cfg: attrs.GuardConfig{Condition: `attributes.namespace ==`}, want: []string{"condition: ERROR"}},
		{name: "not a bool", cfg: attrs.GuardConfig{Condition: `attributes.namespace`}, want: []string{"condition: condition yields string, want bool"}},
		{name: "undeclared variable", cfg: attrs.GuardConfig{Condition: `request.x == 1`}, want: []string{"condition: ERROR", "undeclared reference to 'request'"}},
		{name: "attribute values are strings", cfg: attrs.GuardConfig{Condition: `attributes.namespace == 1`}, want: []string{"no matching overload"}},
		{name: "unknown attribute (select)", cfg: attrs.GuardConfig{Condition: `attributes.nmespace == "dev"`, Known: known}, want: []string{`condition: reads attribute "nmespace", which this upstream never maps`}},
		{name: "unknown attribute (index and in)", cfg: attrs.GuardConfig{Condition: `"pod" in attributes && attributes["node"] == ""`, Known: known}, want: []string{`"node"`, `"pod"`}},
		{name: "blank condition", cfg: attrs.GuardConfig{Condition: "  "}, want: []string{"condition: empty condition"}},
		{name: "bounds", cfg: attrs.GuardConfig{Known: known, AttributeBounds: map[string][]string{
			"Bad": {"x"}, "sub": {"x"}, "pod": {"x"}, "namespace": {"dev", ""},
		}}, want: []string{`attribute_bounds["Bad"]: invalid attribute name`, `attribute_bounds["namespace"][1]: empty pattern`,
			`attribute_bounds["pod"]: this upstream never maps`, `attribute_bounds["sub"]: bound sub with the upstream's subjects`}},
		{name: "bound without patterns", cfg: attrs.GuardConfig{AttributeBounds: map[string][]string{"namespace": {}}}, want: []string{"no pattern"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ps := attrs.CheckGuard(tt.cfg); len(ps) == 0 {
				t.Fatal("no problem reported")
			}
			_, err := attrs.NewGuard(tt.cfg)
			if err == nil {
				t.Fatal("NewGuard succeeded")
			}
			rest := err.Error()
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (in order)", err, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestClaimPath(t *testing.T) {
	claims := map[string]any{
		"kubernetes.io": map[string]any{"namespace": "dev", "pod": map[string]any{"name": "p"}},
		"a/b":           "slash", "t~x": "tilde", "": "empty",
		"list": []any{"x"},
	}
	tests := []struct {
		path string
		want any
		ok   bool
	}{
		{"kubernetes.io", claims["kubernetes.io"], true},
		{"/kubernetes.io/namespace", "dev", true},
		{"/kubernetes.io/pod/name", "p", true},
		{"/kubernetes.io/pod/uid", nil, false},
		{"/kubernetes.io/namespace/x", nil, false},
		{"/a~1b", "slash", true},
		{"a/b", "slash", true},
		{"/t~0x", "tilde", true},
		{"/", "empty", true},
		{"/list/0", nil, false},
		{"missing", nil, false},
	}
	for _, tt := range tests {
		p, err := attrs.ParseClaimPath(tt.path)
		if err != nil {
			t.Fatalf("%q: %v", tt.path, err)
		}
		got, ok := p.Lookup(claims)
		if ok != tt.ok || (ok && !equalAny(got, tt.want)) || p.String() != tt.path {
			t.Errorf("%q: got %v %v, want %v %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
	for _, bad := range []string{"", "/a~", "/a~2", strings.Repeat("/a", attrs.MaxClaimPathDepth+1), strings.Repeat("a", attrs.MaxClaimPathLength+1)} {
		if _, err := attrs.ParseClaimPath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, ok := (attrs.ClaimPath{}).Lookup(claims); ok {
		t.Error("zero ClaimPath found something")
	}
}

func equalAny(a, b any) bool {
	if m, ok := a.(map[string]any); ok {
		n, ok := b.(map[string]any)
		return ok && len(m) == len(n)
	}
	return a == b
}

// FuzzClaimPath: any string either fails to parse or parses to a path whose
// String is the input and whose Lookup never panics; a pointer built by escaping
// names finds the nested value again.
func FuzzClaimPath(f *testing.F) {
	for _, s := range []string{"sub", "/kubernetes.io/namespace", "/a~1b/~0", "/", "//", "/a~", "~", "/~01"} {
		f.Add(s, "x", "y")
	}
	f.Fuzz(func(t *testing.T, s, k1, k2 string) {
		p, err := attrs.ParseClaimPath(s)
		if err == nil {
			if p.String() != s {
				t.Fatalf("String %q, want %q", p.String(), s)
			}
			p.Lookup(map[string]any{s: "v", k1: map[string]any{k2: "w"}})
		}
		if !utf8.ValidString(k1) || !utf8.ValidString(k2) {
			return
		}
		esc := strings.NewReplacer("~", "~0", "/", "~1")
		ptr := "/" + esc.Replace(k1) + "/" + esc.Replace(k2)
		q, err := attrs.ParseClaimPath(ptr)
		if len(ptr) > attrs.MaxClaimPathLength {
			if err == nil {
				t.Fatalf("%d-byte path accepted", len(ptr))
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", ptr, err)
		}
		if v, ok := q.Lookup(map[string]any{k1: map[string]any{k2: "found"}}); !ok || v != "found" {
			t.Fatalf("%q: got %v %v", ptr, v, ok)
		}
	})
}
