package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	thousand := make([]time.Duration, 1000)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one p50", ms(7), 50, 7 * time.Millisecond},
		{"one p99.9", ms(7), 99.9, 7 * time.Millisecond},
		{"two p50 is the lower", ms(1, 2), 50, time.Millisecond},
		{"two p51 is the upper", ms(1, 2), 51, 2 * time.Millisecond},
		{"100 p50", hundred, 50, 50 * time.Millisecond},
		{"100 p90", hundred, 90, 90 * time.Millisecond},
		{"100 p99", hundred, 99, 99 * time.Millisecond},
		{"100 p99.9 is the max", hundred, 99.9, 100 * time.Millisecond},
		{"100 max", hundred, 100, 100 * time.Millisecond},
		{"1000 p99.9 despite float error", thousand, 99.9, 999 * time.Millisecond},
		{"1000 p99", thousand, 99, 990 * time.Millisecond},
		{"p0 clamps to the min", hundred, 0, time.Millisecond},
		{"over 100 clamps to the max", hundred, 150, 100 * time.Millisecond},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: percentile(p%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// The tail after comm is a real line (an sts process) from /proc/PID/stat.
	const tail = ` S 1 1145 32183 0 -1 4194304 12550 0 0 0 663 106 0 0 20 0 8 0 141643 1835065344 5304 ` +
		`18446744073709551615 4194304 10357792 140723161915616 0 0 0 1002060288 0 2143420159 0 0 0 17 0 0 0 0 0 0`
	for _, tc := range []struct {
		line         string
		name         string
		utime, stime uint64
	}{
		{"1219 (sts)" + tail + "\n", "sts", 663, 106},
		{"42 (my sts) R 1 2 3 4 -1 0 0 0 0 0 7 8 0 0 20 0 1 0 5", "my sts", 7, 8},
		// comm runs to the last ")": it may contain spaces and parentheses, even ") S 1".
		{"77 (a (b) ) S 1 c) R 1 2 3 4 -1 0 0 0 0 0 12345 6789 0 0", "a (b) ) S 1 c", 12345, 6789},
		{"9 ()) Z 1 2 3 4 -1 0 0 0 0 0 1 2 0 0", ")", 1, 2},
	} {
		name, u, s, err := parseStat(tc.line)
		if err != nil || name != tc.name || u != tc.utime || s != tc.stime {
			t.Errorf("parseStat(%q) = %q, %d, %d, %v; want %q, %d, %d", tc.line, name, u, s, err, tc.name, tc.utime, tc.stime)
		}
	}
	for _, bad := range []string{
		"",
		"1219 sts S 1 2 3 4 -1 0 0 0 0 0 663 106 0 0",   // no parentheses
		"1219 (sts) S 1 2 3 4 -1 0 0 0 0 0 663",         // too short
		"1219 (sts) S 1 2 3 4 -1 0 0 0 0 0 x 106 0 0",   // utime not a number
		"1219 (sts) S 1 2 3 4 -1 0 0 0 0 0 663 -1 0 0",  // stime negative
		"1219 )sts( S 1 2 3 4 -1 0 0 0 0 0 663 106 0 0", // reversed
	} {
		if _, _, _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

func TestProcCPUSelf(t *testing.T) {
	p, err := newProcCPU(os.Getpid())
	if err != nil {
		t.Skip("no /proc:", err)
	}
	if p.name == "" {
		t.Error("empty process name")
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	if d, err := p.cpu(); err != nil || d <= 0 {
		t.Errorf("cpu() = %v, %v; want > 0", d, err)
	}
	if selfCPU() <= 0 {
		t.Error("selfCPU() = 0")
	}
	if _, err := newProcCPU(1 << 30); err == nil {
		t.Error("newProcCPU of a missing pid succeeded")
	}
}

func TestCheckTarget(t *testing.T) {
	for _, tc := range []struct {
		url         string
		allowRemote bool
		ok          bool
	}{
		{"https://127.0.0.1:8443", false, true},
		{"https://127.0.0.1:8443/", false, true},
		{"https://127.3.4.5", false, true},
		{"https://[::1]:8443", false, true},
		{"https://[::ffff:127.0.0.1]:8443", false, true},
		{"https://localhost:8443", false, true},
		{"http://127.0.0.1:8080/prefix", false, true},
		{"https://10.0.0.1:8443", false, false},
		{"https://0.0.0.0:8443", false, false},
		{"https://[::]:8443", false, false},
		{"https://sts.example", false, false},
		{"https://127.0.0.1.nip.io", false, false},
		{"https://localhost.example.com", false, false},
		{"https://sts.example", true, true},
		{"ftp://127.0.0.1", false, false},
		{"127.0.0.1:8443", false, false},
		{"https://user:pw@127.0.0.1:8443", false, false},
		{"https://127.0.0.1:8443/?x=1", false, false},
		{"https:///token", false, false},
	} {
		_, err := checkTarget(tc.url, tc.allowRemote)
		if (err == nil) != tc.ok {
			t.Errorf("checkTarget(%q, allowRemote=%v) = %v, want ok=%v", tc.url, tc.allowRemote, err, tc.ok)
		}
	}
}

func TestLoopbackOnlyDial(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8443":          true,
		"127.255.0.9:1":           true,
		"[::1]:8443":              true,
		"[::ffff:127.0.0.1]:8443": true,
		"10.1.2.3:8443":           false,
		"[2001:db8::1]:443":       false,
		"192.168.0.1:443":         false,
		"nonsense":                false,
	} {
		if err := loopbackOnly("tcp", addr, nil); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"--sts", "https://127.0.0.1:8443"},
		{"--quickstart", dir, "--sts", "https://sts.example"},
		{"--quickstart", dir, "--duration", "0"},
		{"--quickstart", dir, "--duration", "2h"},
		{"--quickstart", dir, "--concurrency", "0"},
		{"--quickstart", dir, "--tokens", "0"},
		{"--quickstart", dir, "--pid", "-3"},
		{"--quickstart", dir, "extra"},
		{"--no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2; stderr: %s", args, code, stderr.String())
		}
		if stdout.Len() > 0 {
			t.Errorf("run(%q) wrote to stdout: %s", args, stdout.String())
		}
	}
	// A missing key file is a failure (1), not a usage error.
	var stderr bytes.Buffer
	if code := run([]string{"--quickstart", dir}, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "upstream-key") {
		t.Errorf("missing key: exit %d, stderr %q", code, stderr.String())
	}
}

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadKeyAndMint(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	for _, tc := range []struct {
		name string
		path string
		pub  crypto.PublicKey
		alg  jose.SignatureAlgorithm
	}{
		{"P-256 PKCS#8", writePEM(t, "PRIVATE KEY", pkcs8(ec)), ec.Public(), jose.ES256},
		{"P-256 SEC 1", writePEM(t, "EC PRIVATE KEY", sec1), ec.Public(), jose.ES256},
		{"RSA PKCS#1", writePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), rk.Public(), jose.RS256},
		{"RSA PKCS#8", writePEM(t, "PRIVATE KEY", pkcs8(rk)), rk.Public(), jose.RS256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := loadKey(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			o := &options{issuer: "https://up.example", kid: thumbprint(key), upAudience: "sts",
				subjPref: "system:serviceaccount:demo:bench-", audience: "https://api.demo.internal", scope: "api.read", tokens: 5}
			now := time.Now()
			bodies, err := mintBodies(key, o, now)
			if err != nil || len(bodies) != 5 {
				t.Fatalf("mintBodies = %d bodies, %v", len(bodies), err)
			}
			subs, jtis := map[string]bool{}, map[string]bool{}
			for _, body := range bodies {
				f, err := url.ParseQuery(body)
				if err != nil {
					t.Fatal(err)
				}
				if f.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" ||
					f.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt" ||
					f.Get("audience") != o.audience || f.Get("scope") != o.scope {
					t.Fatalf("form %v", f)
				}
				jws, err := jose.ParseSignedCompact(f.Get("subject_token"), []jose.SignatureAlgorithm{tc.alg})
				if err != nil {
					t.Fatal(err)
				}
				if h := jws.Signatures[0].Header; h.KeyID != o.kid || h.ExtraHeaders["typ"] != "JWT" {
					t.Errorf("header kid %q typ %v", h.KeyID, h.ExtraHeaders["typ"])
				}
				payload, err := jws.Verify(tc.pub)
				if err != nil {
					t.Fatal(err)
				}
				var c subjectClaims
				if err := json.Unmarshal(payload, &c); err != nil {
					t.Fatal(err)
				}
				if c.Issuer != o.issuer || len(c.Audience) != 1 || c.Audience[0] != "sts" ||
					!strings.HasPrefix(c.Subject, o.subjPref) || c.IssuedAt != now.Unix() ||
					c.Expiry != now.Add(time.Hour).Unix() || len(c.ID) != 22 {
					t.Errorf("claims %+v", c)
				}
				subs[c.Subject], jtis[c.ID] = true, true
			}
			if len(subs) != 5 || len(jtis) != 5 {
				t.Errorf("%d distinct subjects and %d distinct jtis, want 5", len(subs), len(jtis))
			}
		})
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, path := range map[string]string{
		"P-384":    writePEM(t, "PRIVATE KEY", pkcs8(p384)),
		"RSA-1024": writePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small)),
		"a cert":   writePEM(t, "CERTIFICATE", []byte{1, 2, 3}),
	} {
		if _, err := loadKey(path); err == nil {
			t.Errorf("loadKey accepted %s", name)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   string
	}{
		{400, `{"error":"invalid_request","error_description":"x"}`, "400 invalid_request"},
		{503, `{"error":"temporarily_unavailable"}`, "503 temporarily_unavailable"},
		{502, `<html>bad gateway</html>`, "502"},
		{400, `{"error":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}`, "400"}, // never echo something token-like
	} {
		if got := errorKind(tc.status, []byte(tc.body)); got != tc.want {
			t.Errorf("errorKind(%d, %s) = %q, want %q", tc.status, tc.body, got, tc.want)
		}
	}
	if got := transportKind(fmt.Errorf("dial: %w", syscall.ECONNREFUSED)); got != "connection refused" {
		t.Errorf("transportKind(ECONNREFUSED) = %q", got)
	}
	if got := transportKind(&url.Error{Op: "Post", URL: "https://127.0.0.1/token", Err: errors.New("boom")}); got != "transport: boom" {
		t.Errorf("transportKind(url.Error) = %q", got)
	}
}
