package policy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/review")

// golden compares got with the golden file, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "review", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestReview -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -run TestReview -update and review the diff):\n%s", path, got)
	}
}

func TestReview(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		files []string
		usage map[string]uint64
		// upstreams are the subjects each upstream asserts (ReviewOptions).
		upstreams map[string][]string
	}{
		{
			name:  "basic",
			files: []string{filepath.Join("testdata", "review", "basic.yaml")},
			usage: map[string]uint64{
				"payments-ledger": 120, "payments-ledger-long": 3, "gateway-for-payments": 7, "anyone-metrics": 9000,
				"new-reporting": 0, "mtls-payments-admin": 0, "no-debug": 2, "security-team": 1,
				// anyone-vault, old-migration, no-ledger-write-from-b and
				// everyone-reads-feed are missing: never matched.
			},
		},
		{
			// The upstreams' subjects bound what rules grant: "*" on cluster-a is
			// two namespaces, billing:api is granted to nobody.
			name:  "limits",
			files: []string{filepath.Join("testdata", "review", "basic.yaml")},
			upstreams: map[string][]string{
				"cluster-a": {"system:serviceaccount:payments:*", "system:serviceaccount:gateway:*"},
				"cluster-b": {"spiffe://b.example/*"},
			},
		},
		{name: "features", files: []string{filepath.Join("testdata", "features.yaml")}},
		{name: "v0", files: []string{filepath.Join("testdata", "base.yaml"), filepath.Join("testdata", "payments.yaml"), filepath.Join("testdata", "empty.yaml")}},
		{name: "empty", files: []string{filepath.Join("testdata", "empty.yaml")}, usage: map[string]uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Load(tt.files...)
			if err != nil {
				t.Fatal(err)
			}
			rv := p.ReviewWith(now, policy.ReviewOptions{Usage: tt.usage, UpstreamSubjects: tt.upstreams})
			if tt.upstreams == nil {
				if old := p.Review(now, tt.usage); !reflect.DeepEqual(old, rv) {
					t.Errorf("Review and ReviewWith without upstreams differ:\n%+v\n%+v", old, rv)
				}
			}
			var text bytes.Buffer
			if err := rv.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".golden", text.Bytes())
			js, err := json.MarshalIndent(rv, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".json.golden", append(js, '\n'))

			// Deterministic: a second review is byte for byte the same.
			var again bytes.Buffer
			if err := p.ReviewWith(now, policy.ReviewOptions{Usage: tt.usage, UpstreamSubjects: tt.upstreams}).WriteText(&again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(text.Bytes(), again.Bytes()) {
				t.Error("two reviews differ")
			}
		})
	}
	var nilPolicy *policy.Policy
	if rv := nilPolicy.Review(now, nil); len(rv.Upstreams)+len(rv.Findings) != 0 {
		t.Errorf("%+v", rv)
	}
}
