package testspire

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestSPIRE starts a real server and agent, registers this process as a workload
// and checks the SVIDs it gets against the trust domain's bundle.
func TestSPIRE(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := Start(t, Options{})
	startup := time.Since(began)

	if got := s.TrustDomain().Name(); got != DefaultTrustDomain {
		t.Errorf("TrustDomain() = %q, want %q", got, DefaultTrustDomain)
	}
	if !strings.HasPrefix(s.SocketPath(), "unix:///tmp/spire-") {
		t.Errorf("SocketPath() = %q", s.SocketPath())
	}
	if !strings.HasPrefix(s.ServerAddr(), "127.0.0.1:") {
		t.Errorf("ServerAddr() = %q", s.ServerAddr())
	}

	began = time.Now()
	id := s.RegisterWorkload(t, "/workload/client")
	propagation := time.Since(began)
	t.Logf("measured: startup (server and agent healthy) %s; entry propagation (created to served) %s",
		startup.Round(time.Millisecond), propagation.Round(time.Millisecond))
	if want := "spiffe://example.org/workload/client"; id.String() != want {
		t.Fatalf("RegisterWorkload = %s, want %s", id, want)
	}

	bundle, err := spiffebundle.Parse(s.TrustDomain(), s.BundleJWKS(t))
	if err != nil {
		t.Fatalf("parse BundleJWKS: %v", err)
	}
	if len(bundle.X509Authorities()) == 0 || len(bundle.JWTAuthorities()) == 0 {
		t.Fatalf("bundle has %d X.509 and %d JWT authorities", len(bundle.X509Authorities()), len(bundle.JWTAuthorities()))
	}

	t.Run("JWT-SVID", func(t *testing.T) {
		token := s.FetchJWTSVID(t, "sts")
		svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"sts"})
		if err != nil {
			t.Fatalf("ParseAndValidate: %v", err)
		}
		if svid.ID != id {
			t.Errorf("JWT-SVID ID = %s, want %s", svid.ID, id)
		}
		if _, err := jwtsvid.ParseAndValidate(token, bundle, []string{"other"}); err == nil {
			t.Error("ParseAndValidate accepted the token for another audience")
		}
		header, claims := decodeJWT(t, token)
		if header["typ"] != "JWT" || header["kid"] == nil {
			t.Errorf("header = %v, want typ JWT and a kid", header)
		}
		if keys := sortedKeys(claims); !slices.Equal(keys, []string{"aud", "exp", "iat", "sub"}) {
			t.Errorf("claims %v, want exactly aud, exp, iat, sub (no iss without jwt_issuer)", keys)
		}
		if aud, ok := claims["aud"].([]any); !ok || len(aud) != 1 || aud[0] != "sts" {
			t.Errorf("aud = %#v, want [\"sts\"]", claims["aud"])
		}
		if got := s.FetchJWTSVIDFor(t, id, "sts"); got == "" {
			t.Error("FetchJWTSVIDFor returned nothing")
		}
	})

	t.Run("X.509-SVID", func(t *testing.T) {
		svid := s.FetchX509SVID(t)
		if svid.ID != id {
			t.Errorf("X.509-SVID ID = %s, want %s", svid.ID, id)
		}
		gotID, chains, err := x509svid.Verify(svid.Certificates, bundle)
		if err != nil {
			t.Fatalf("x509svid.Verify: %v", err)
		}
		if gotID != id || len(chains) == 0 {
			t.Errorf("Verify = %s with %d chains, want %s", gotID, len(chains), id)
		}
		// BundlePEM holds the same X.509 authorities.
		block, _ := pem.Decode(s.BundlePEM())
		if block == nil || !bundle.HasX509Authority(mustParseCert(t, block.Bytes)) {
			t.Error("BundlePEM's first certificate is not an X.509 authority of BundleJWKS")
		}
	})
}

// TestSPIREOptions checks a trust domain, jwt_issuer and TTLs of one's own, two
// workloads for one process, and re-registering an existing entry.
func TestSPIREOptions(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{
		TrustDomain: "sts.test",
		JWTIssuer:   "https://spire.sts.test",
		X509SVIDTTL: 10 * time.Minute,
		JWTSVIDTTL:  2 * time.Minute,
	})
	alice := s.RegisterWorkload(t, "alice")
	bob := s.RegisterWorkload(t, "/bob", "unix:uid:"+strconv.Itoa(os.Getuid()), "unix:gid:"+strconv.Itoa(os.Getgid()))
	if again := s.RegisterWorkload(t, "alice"); again != alice {
		t.Errorf("re-registering alice = %s", again)
	}

	bundle, err := spiffebundle.Parse(s.TrustDomain(), s.BundleJWKS(t))
	if err != nil {
		t.Fatalf("parse BundleJWKS: %v", err)
	}
	for _, id := range []spiffeid.ID{alice, bob} {
		token := s.FetchJWTSVIDFor(t, id, "sts")
		svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"sts"})
		if err != nil {
			t.Fatalf("ParseAndValidate: %v", err)
		}
		if svid.ID != id {
			t.Errorf("JWT-SVID for %s has ID %s", id, svid.ID)
		}
		_, claims := decodeJWT(t, token)
		if claims["iss"] != "https://spire.sts.test" {
			t.Errorf("iss = %v, want the jwt_issuer", claims["iss"])
		}
		if ttl := claims["exp"].(float64) - claims["iat"].(float64); ttl != 120 {
			t.Errorf("JWT-SVID lifetime %vs, want 120s", ttl)
		}
		x := s.FetchX509SVIDFor(t, id)
		if _, _, err := x509svid.Verify(x.Certificates, bundle); err != nil {
			t.Errorf("x509svid.Verify(%s): %v", id, err)
		}
		if ttl := x.Certificates[0].NotAfter.Sub(x.Certificates[0].NotBefore); ttl < 9*time.Minute || ttl > 11*time.Minute {
			t.Errorf("X.509-SVID for %s lives %s, want about 10m", id, ttl)
		}
	}

	// An entry the server refuses fails the test even though entry create exits 0.
	msgs, fataled := runFatal(t, func(tb testing.TB) {
		s.RegisterWorkload(tb, "/refused", "unix:") // "missing selector value", exit status 0
	})
	if !fataled || !strings.Contains(strings.Join(msgs, "\n"), "status") {
		t.Errorf("RegisterWorkload with a refused entry: fatal %v, messages %q", fataled, msgs)
	}
}

func TestWithDefaults(t *testing.T) {
	opts, td := withDefaults(t, Options{})
	if td.Name() != DefaultTrustDomain || opts.X509SVIDTTL != time.Hour || opts.JWTSVIDTTL != 5*time.Minute || opts.CATTL != 24*time.Hour {
		t.Errorf("defaults = %+v, %s", opts, td)
	}
	opts, _ = withDefaults(t, Options{X509SVIDTTL: 8 * time.Hour})
	if opts.CATTL != 48*time.Hour {
		t.Errorf("CATTL for an 8h X.509-SVID TTL = %s, want 48h", opts.CATTL)
	}
	msgs, fataled := runFatal(t, func(tb testing.TB) {
		withDefaults(tb, Options{JWTSVIDTTL: time.Hour, CATTL: 5 * time.Hour})
	})
	if !fataled {
		t.Errorf("CATTL under 6x the SVID TTL was accepted: %q", msgs)
	}
}

func TestConfigs(t *testing.T) {
	opts, td := withDefaults(t, Options{JWTIssuer: "https://iss"})
	s := &SPIRE{td: td, dir: "/tmp/spire-x", serverSock: "/tmp/spire-x/server.sock", agentSock: "/tmp/spire-x/agent.sock", serverAddr: "127.0.0.1:4242"}
	server := s.serverConfig(opts, 4242)
	for _, want := range []string{
		`bind_address = "127.0.0.1"`, `bind_port = "4242"`, `ca_ttl = "24h0m0s"`, `jwt_issuer = "https://iss"`,
		`cache_reload_interval = "1s"`, `database_type = "sqlite3"`, `NodeAttestor "join_token"`, `KeyManager "disk"`,
	} {
		if !strings.Contains(server, want) {
			t.Errorf("server config lacks %s:\n%s", want, server)
		}
	}
	agent := s.agentConfig(opts, "/tmp/spire-x/bundle.pem", "tok")
	for _, want := range []string{
		`server_port = "4242"`, `trust_bundle_path = "/tmp/spire-x/bundle.pem"`, `join_token = "tok"`,
		`sync_interval = "1s"`, `WorkloadAttestor "unix"`,
	} {
		if !strings.Contains(agent, want) {
			t.Errorf("agent config lacks %s:\n%s", want, agent)
		}
	}
	if strings.Contains(agent, "insecure_bootstrap") {
		t.Error("agent config uses insecure_bootstrap")
	}
}

func TestSelectsSelf(t *testing.T) {
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	for sels, want := range map[string]bool{
		"unix:uid:" + uid:                      true,
		"unix:uid:" + uid + ",unix:gid:" + gid: true,
		"unix:uid:" + uid + ",unix:gid:99999":  false,
		"unix:uid:99999":                       false,
		"k8s:ns:default":                       false,
	} {
		if got := selectsSelf(strings.Split(sels, ",")); got != want {
			t.Errorf("selectsSelf(%s) = %v, want %v", sels, got, want)
		}
	}
}

func decodeJWT(t *testing.T, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("decode part %d: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("unmarshal part %d: %v", i, err)
		}
	}
	return header, claims
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// fatalTB records Fatal calls instead of failing the test; it passes the rest
// (Cleanup, TempDir, ...) to the real test.
type fatalTB struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Logf(format string, args ...any) { f.record(fmt.Sprintf(format, args...)) }

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.record(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any) {
	f.record(fmt.Sprint(args...))
	runtime.Goexit()
}

func (f *fatalTB) record(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, msg)
}

// runFatal runs fn with a fatalTB on its own goroutine and reports whether it
// called Fatal, with the messages it logged.
func runFatal(t *testing.T, fn func(testing.TB)) (msgs []string, fataled bool) {
	tb := &fatalTB{TB: t}
	done := make(chan bool)
	go func() {
		finished := false
		defer func() { done <- !finished }()
		fn(tb)
		finished = true
	}()
	fataled = <-done
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.msgs, fataled
}

func mustParseCert(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}
