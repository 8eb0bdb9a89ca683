package strictjson

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeObject(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error // nil: must succeed; errAny: any error
	}{
		{"simple", `{"iss":"a","aud":["x","y"],"exp":1.5e9,"n":null,"b":true}`, nil},
		{"nested", `{"kubernetes.io":{"namespace":"ns","pod":{"name":"p"}}}`, nil},
		{"whitespace", " \n{ } \t", nil},
		{"same name in sibling objects", `{"a":{"x":1},"b":{"x":2}}`, nil},
		{"case differs", `{"iss":"a","ISS":"b"}`, nil},
		{"dup top", `{"iss":"good","iss":"evil"}`, ErrDuplicateKey},
		{"dup nested", `{"a":{"x":1,"x":2}}`, ErrDuplicateKey},
		{"dup in array", `{"a":[{"x":1,"x":1}]}`, ErrDuplicateKey},
		{"dup via escape", `{"iss":"a","\u0069ss":"b"}`, ErrDuplicateKey},
		{"too deep", `{"a":{"b":{"c":{"d":{}}}}}`, ErrTooDeep},
		{"too deep array", `{"a":[[[[1]]]]}`, ErrTooDeep},
		{"invalid utf8", "{\"a\":\"\xff\"}", ErrInvalidUTF8},
		{"array", `[1]`, ErrNotObject},
		{"string", `"x"`, ErrNotObject},
		{"null", `null`, ErrNotObject},
		{"empty", ``, ErrNotObject},
		{"two objects", `{}{}`, ErrNotObject},
		{"trailing garbage", `{} x`, ErrNotObject},
		{"syntax", `{"a" 1}`, errAny},
		{"unterminated", `{"a":1`, errAny},
		{"huge number", `{"a":1e400}`, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeObject([]byte(tt.in), 4)
			if ref := referenceCheck([]byte(tt.in), 4); (ref == nil) != (err == nil) && tt.want != ErrInvalidUTF8 {
				t.Fatalf("DecodeObject: %v, reference: %v", err, ref)
			}
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want == nil:
				var std map[string]any
				if err := json.Unmarshal([]byte(tt.in), &std); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, std) {
					t.Fatalf("got %#v, encoding/json %#v", got, std)
				}
			case err == nil:
				t.Fatalf("accepted, want %v", tt.want)
			case tt.want != errAny && !errors.Is(err, tt.want):
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestDecodeObjectDepthBound(t *testing.T) {
	// Deep nesting is refused at the bound, long before encoding/json's own limit.
	deep := `{"a":` + strings.Repeat(`[`, 5000) + strings.Repeat(`]`, 5000) + `}`
	if _, err := DecodeObject([]byte(deep), 32); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("got %v, want ErrTooDeep", err)
	}
	if _, err := DecodeObject([]byte(`{}`), 0); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("maxDepth 0: got %v", err)
	}
}

// FuzzDupKeys holds DecodeObject to encoding/json and to the json.Decoder-based
// reference detector: what it accepts decodes as encoding/json decodes it, and it
// refuses exactly what the reference refuses (invalid UTF-8 aside, which only
// DecodeObject refuses).
func FuzzDupKeys(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`,
		`{"iss":"good","iss":"evil"}`, `{"a":"\u0061","\u0061":1}`, `{"a":[[[[[]]]]]}`,
		`[]`, `{"a":1} {}`, "{\"\xff\":1}", `{"a":-0.5e-3,"b":null,"c":true}`,
		`{"a\"":1,"a\\":2, "b" : {"x\"":[":"]}}`, `{"a":"}","b":"{{{{{{{{{"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeObject(data, 8)
		ref := referenceCheck(data, 8)
		if !utf8.Valid(data) {
			if err == nil {
				t.Fatal("accepted invalid UTF-8")
			}
			return
		}
		if (err == nil) != (ref == nil) {
			t.Fatalf("DecodeObject: %v, reference: %v", err, ref)
		}
		if json.Valid(data) && errors.Is(ref, ErrDuplicateKey) && !errors.Is(err, ErrDuplicateKey) {
			t.Fatalf("reference found a duplicate, DecodeObject: %v", err)
		}
		if err != nil {
			return
		}
		var std map[string]any
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		if !reflect.DeepEqual(got, std) {
			t.Fatalf("decoded %#v, encoding/json %#v", got, std)
		}
	})
}

func BenchmarkDecodeObject(b *testing.B) {
	claims := []byte(`{"iss":"https://good.example","sub":"system:serviceaccount:ns:sa","aud":["a"],` +
		`"exp":4102444800,"iat":1,"nbf":1,"kubernetes.io":{"namespace":"ns","pod":{"name":"p","uid":"u"},` +
		`"serviceaccount":{"name":"sa","uid":"u"}}}`)
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeObject(claims, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := referenceCheck(claims, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(claims, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
