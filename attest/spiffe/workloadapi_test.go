package spiffe_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/spiffe"
	"github.com/safeconduct/safeconduct/internal/testspire"
)

// fakeAgent is a Workload API server that streams JWT and X.509 bundles (as a SPIRE
// agent does, keyed by trust domain ID) and pushes every change to its watchers.
// The end-to-end test against a real SPIRE agent lives with internal/testspire.
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	mu     sync.Mutex
	jwt    map[string][]byte // "spiffe://td" -> JWKS
	x509   map[string][]byte // "spiffe://td" -> concatenated DER CA certificates
	notify chan struct{}     // closed and replaced on every change
}

// current returns copies of the bundle maps: update mutates them in place while
// a stream may still be marshalling what it read.
func (a *fakeAgent) current() (jwt, x509 map[string][]byte, notify <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.jwt), maps.Clone(a.x509), a.notify
}

// update changes the bundles and wakes the streams.
func (a *fakeAgent) update(f func(a *fakeAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
	close(a.notify)
	a.notify = make(chan struct{})
}

func (a *fakeAgent) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	for {
		jwt, _, notify := a.current()
		if err := stream.Send(&workload.JWTBundlesResponse{Bundles: jwt}); err != nil {
			return err
		}
		select {
		case <-notify:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (a *fakeAgent) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	for {
		_, x509, notify := a.current()
		if err := stream.Send(&workload.X509BundlesResponse{Bundles: x509}); err != nil {
			return err
		}
		select {
		case <-notify:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// serve starts the agent on a unix socket at path; Stop on the server returned
// takes it down (the socket file is removed).
func (a *fakeAgent) serve(t *testing.T, path string) *grpc.Server {
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(s, a)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return s
}

func jwks(t *testing.T, td string, keys map[string]crypto.PublicKey) []byte {
	b, err := jwtbundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString(td), keys).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWorkloadAPISource(t *testing.T) {
	k := testKeys()
	cas := testCAs()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := &fakeAgent{
		notify: make(chan struct{}),
		jwt: map[string][]byte{
			"spiffe://" + tdA: jwks(t, tdA, map[string]crypto.PublicKey{"a1": k.a1.Public()}),
			"spiffe://" + tdB: jwks(t, tdB, map[string]crypto.PublicKey{"b1": k.b1.Public()}),
		},
		x509: map[string][]byte{"spiffe://" + tdA: cas[tdA].cert.Raw, "spiffe://" + tdB: cas[tdB].cert.Raw},
	}
	clock := newClock()
	newV := func(td string) *spiffe.Verifier {
		v, err := spiffe.New(t.Context(), spiffe.Config{
			Name: "agent-" + td, TrustDomain: td, Audiences: []string{aud},
			WorkloadAPISocket: "unix://" + sock, Now: clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	svidA := func(t *testing.T) []*x509.Certificate {
		return []*x509.Certificate{cas[tdA].svid(t, "spiffe://"+tdA+"/w")}
	}

	// The agent is down: New does not wait; verification is unavailable.
	a := newV(tdA)
	if err := verifyKid(t, a, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("before the agent is up: %v", err)
	}
	if _, err := a.VerifyX509(t.Context(), svidA(t)); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("before the agent is up: %v", err)
	}
	agent.serve(t, sock) // the client reconnects after its backoff (1s)
	waitFor(t, "the agent's bundles", func() bool {
		_, err := a.VerifyX509(t.Context(), svidA(t))
		return verifyKid(t, a, clock, "a1", k.a1) == nil && err == nil
	})

	// A federated trust domain through the same agent.
	b := newV(tdB)
	verifyB := func() error {
		_, err := b.Verify(t.Context(), signRaw(t, "ES256", hdr("ES256", "b1"),
			claims(t, clock.Now(), set("sub", "spiffe://"+tdB+"/w")), k.b1), attest.TypeJWT)
		return err
	}
	waitFor(t, "the federated bundle", func() bool { return verifyB() == nil })
	if err := verifyKid(t, b, clock, "a1", k.a1); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("A's SVID attested by B: %v", err)
	}

	// The agent pushes a rotation.
	agent.update(func(ag *fakeAgent) {
		ag.jwt["spiffe://"+tdA] = jwks(t, tdA, map[string]crypto.PublicKey{"a2": k.a2.Public()})
	})
	waitFor(t, "the rotation", func() bool { return verifyKid(t, a, clock, "a2", k.a2) == nil })
	if err := verifyKid(t, a, clock, "a1", k.a1); !errors.Is(err, attest.ErrInvalid) {
		t.Fatalf("retired key: %v", err)
	}

	// An update that fails vetting is refused; the last good bundle stays.
	failures := a.Stats().Failures
	agent.update(func(ag *fakeAgent) {
		ag.jwt["spiffe://"+tdA] = jwks(t, tdA, map[string]crypto.PublicKey{"a2": k.a2.Public(), "w": k.weakRSA.Public()})
	})
	waitFor(t, "the refusal", func() bool { return a.Stats().Failures > failures })
	if err := verifyKid(t, a, clock, "a2", k.a2); err != nil {
		t.Fatalf("last good bundle dropped: %v", err)
	}

	// The agent stops delivering the trust domain (federation removed): its
	// bundle is withdrawn, for B only.
	agent.update(func(ag *fakeAgent) {
		delete(ag.jwt, "spiffe://"+tdB)
		delete(ag.x509, "spiffe://"+tdB)
	})
	waitFor(t, "the withdrawal", func() bool {
		return errors.Is(verifyB(), attest.ErrUnavailable)
	})
	if err := verifyKid(t, a, clock, "a2", k.a2); err != nil {
		t.Fatalf("A affected by B's withdrawal: %v", err)
	}

	// Close stops the watch; verification is unavailable afterwards.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := verifyKid(t, a, clock, "a2", k.a2); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("after Close: %v", err)
	}
}

// A Workload API bundle is current while the agent's streams are connected,
// however old; once the agent is gone it is usable for WorkloadAPIMaxStale, then
// verification fails closed (a key removed in SPIRE meanwhile is not trusted
// forever) until the agent is back. A refused update starts the same clock.
func TestWorkloadAPIStaleness(t *testing.T) {
	k := testKeys()
	cas := testCAs()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := &fakeAgent{
		notify: make(chan struct{}),
		jwt:    map[string][]byte{"spiffe://" + tdA: jwks(t, tdA, map[string]crypto.PublicKey{"a1": k.a1.Public()})},
		x509:   map[string][]byte{"spiffe://" + tdA: cas[tdA].cert.Raw},
	}
	srv := agent.serve(t, sock)
	clock := newClock()
	const maxStale = 10 * time.Minute
	v, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "agent", TrustDomain: tdA, Audiences: []string{aud},
		WorkloadAPISocket: "unix://" + sock, WorkloadAPIMaxStale: maxStale, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	waitFor(t, "the agent's bundle", func() bool { return verifyKid(t, v, clock, "a1", k.a1) == nil })

	// Connected: the bundle does not age, however long the agent stays silent.
	clock.Advance(10 * maxStale)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatalf("connected agent, unchanged bundle: %v", err)
	}

	// The agent goes away: the bundle ages from that moment.
	srv.Stop()
	waitFor(t, "the broken stream", func() bool { return !v.Stats().BundleBehindSince.IsZero() })
	if since := v.Stats().BundleBehindSince; !since.Equal(clock.Now()) {
		t.Fatalf("behind since %v, want %v", since, clock.Now())
	}
	clock.Advance(maxStale - time.Second)
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatalf("within max_stale: %v", err)
	}
	clock.Advance(time.Second)
	err = verifyKid(t, v, clock, "a1", k.a1)
	if !errors.Is(err, attest.ErrUnavailable) || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("max_stale after the agent left: %v", err)
	}
	if _, err := v.VerifyX509(t.Context(), []*x509.Certificate{cas[tdA].svid(t, "spiffe://"+tdA+"/w")}); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("X.509-SVID with a stale bundle: %v", err)
	}

	// The agent is back (the client reconnects with backoff): current again.
	agent.serve(t, sock)
	waitWithin(t, 30*time.Second, "the reconnection", func() bool { return verifyKid(t, v, clock, "a1", k.a1) == nil })
	if since := v.Stats().BundleBehindSince; !since.IsZero() {
		t.Fatalf("behind since %v after reconnecting", since)
	}

	// A refused update leaves the last good bundle, for max_stale only.
	agent.update(func(ag *fakeAgent) {
		ag.jwt["spiffe://"+tdA] = jwks(t, tdA, map[string]crypto.PublicKey{"w": k.weakRSA.Public()})
	})
	waitFor(t, "the refusal", func() bool { return !v.Stats().BundleBehindSince.IsZero() })
	if err := verifyKid(t, v, clock, "a1", k.a1); err != nil {
		t.Fatalf("last good bundle within max_stale: %v", err)
	}
	clock.Advance(maxStale)
	if err := verifyKid(t, v, clock, "a1", k.a1); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("max_stale after a refused update: %v", err)
	}
	agent.update(func(ag *fakeAgent) {
		ag.jwt["spiffe://"+tdA] = jwks(t, tdA, map[string]crypto.PublicKey{"a2": k.a2.Public()})
	})
	waitFor(t, "the good update", func() bool { return verifyKid(t, v, clock, "a2", k.a2) == nil })
}

// The same against a real SPIRE agent that is stopped: its bundle is trusted for
// WorkloadAPIMaxStale after the agent went away, then SVIDs are refused as
// unavailable.
func TestWorkloadAPIStalenessSPIRE(t *testing.T) {
	s := testspire.Start(t, testspire.Options{})
	id := s.RegisterWorkload(t, "/stale")
	token := s.FetchJWTSVIDFor(t, id, aud)
	clock := newClock()
	const maxStale = 2 * time.Minute
	v, err := spiffe.New(t.Context(), spiffe.Config{
		Name: "spire", TrustDomain: s.TrustDomain().Name(), Audiences: []string{aud},
		WorkloadAPISocket: s.SocketPath(), WorkloadAPIMaxStale: maxStale, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	verify := func() error {
		_, err := v.Verify(t.Context(), token, attest.TypeJWT)
		return err
	}
	waitWithin(t, 20*time.Second, "the agent's bundle", func() bool { return verify() == nil })

	s.StopAgent()
	waitWithin(t, 20*time.Second, "the broken stream", func() bool { return !v.Stats().BundleBehindSince.IsZero() })
	clock.Advance(maxStale - time.Second)
	if err := verify(); err != nil {
		t.Fatalf("within max_stale of the agent's stop: %v", err)
	}
	clock.Advance(time.Second)
	if err := verify(); !errors.Is(err, attest.ErrUnavailable) {
		t.Fatalf("max_stale after the agent stopped: %v", err)
	}
}
