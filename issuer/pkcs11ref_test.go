package issuer

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzPKCS11Ref: the key reference parser never panics, and what it accepts
// renders back to a file that parses to the same reference.
func FuzzPKCS11Ref(f *testing.F) {
	f.Add([]byte("token: sts\nkey_label: sts-signing\nkey_id: a1b2\nkid: abcdefghijk\n"))
	f.Add([]byte("# c\ntoken: a\nkey_label: b\nkey_id: 00\nkid: k\ntoken: again\n"))
	f.Add([]byte("token:\nkey_label: \xff\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ref, err := parsePKCS11Ref(data)
		if err != nil {
			return
		}
		back, err := parsePKCS11Ref(ref.marshal())
		if err != nil {
			t.Fatalf("rendered reference does not parse: %v", err)
		}
		if back.token != ref.token || back.label != ref.label || back.kid != ref.kid || !bytes.Equal(back.id, ref.id) {
			t.Fatalf("round trip %+v -> %+v", ref, back)
		}
	})
}

// TestPKCS11RefParse: the reference file's edges, each refused with its reason.
func TestPKCS11RefParse(t *testing.T) {
	good := "token: sts\nkey_label: sts-signing\nkey_id: a1b2\nkid: abcdefghijk\n"
	if ref, err := parsePKCS11Ref([]byte(good)); err != nil || ref.label != "sts-signing" || string(ref.id) != "\xa1\xb2" {
		t.Fatalf("%+v %v", ref, err)
	}
	for name, tc := range map[string]struct{ data, want string }{
		"missing":   {"token: sts\n", "missing key_label, key_id, kid"},
		"twice":     {good + "kid: x\n", "kid given twice"},
		"no colon":  {"token sts\n", "want name: value"},
		"bad hex":   {strings.Replace(good, "a1b2", "a1b", 1), "key_id must be hex"},
		"empty":     {strings.Replace(good, "sts-signing", "", 1), "1 to 256 printable"},
		"non-ascii": {strings.Replace(good, "sts-signing", "stš", 1), "1 to 256 printable"},
		"unknown":   {good + "pin: 1234\n", `unknown field "pin"`},
		"too large": {good + "#" + strings.Repeat("x", maxPKCS11Ref), "larger than"},
	} {
		if _, err := parsePKCS11Ref([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}
