package testspire

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/internal/testbin"
	"github.com/safeconduct/safeconduct/internal/testproc"
)

const (
	// DefaultTrustDomain is the trust domain used when Options.TrustDomain is empty.
	DefaultTrustDomain = "example.org"
	// DefaultX509SVIDTTL and DefaultJWTSVIDTTL are SPIRE's own defaults.
	DefaultX509SVIDTTL = time.Hour
	DefaultJWTSVIDTTL  = 5 * time.Minute
	// DefaultCATTL is SPIRE's default CA TTL, raised when needed to 6x the SVID TTLs.
	DefaultCATTL = 24 * time.Hour
	// caTTLFactor: SPIRE v1.13 only issues SVIDs for their full TTL while the CA
	// has at least 6x that left (otherwise it silently shortens them).
	caTTLFactor = 6
	// maxSocketPath stays under the unix socket path limit (104 bytes on macOS, 108
	// on Linux) with room for the name gRPC and SPIRE derive from it.
	maxSocketPath = 100
	startTries    = 3
)

// Options configure Start. The zero value is a valid configuration.
type Options struct {
	// TrustDomain is the trust domain name; DefaultTrustDomain when empty.
	TrustDomain string
	// JWTIssuer sets the server's jwt_issuer: the iss claim of JWT-SVIDs. When
	// empty, JWT-SVIDs carry no iss claim.
	JWTIssuer string
	// X509SVIDTTL and JWTSVIDTTL set default_x509_svid_ttl and
	// default_jwt_svid_ttl; SPIRE's defaults (1h and 5m) when zero.
	X509SVIDTTL time.Duration
	JWTSVIDTTL  time.Duration
	// CATTL sets ca_ttl; when zero, DefaultCATTL or 6x the longest SVID TTL,
	// whichever is longer. A CATTL below 6x the SVID TTLs fails the test.
	CATTL time.Duration
	// LogLevel is the server's and agent's log_level (DEBUG, INFO, WARN, ERROR);
	// INFO when empty. Logs go to files and are printed only on failure.
	LogLevel string
}

// SPIRE is a running spire-server and spire-agent, stopped when the test that
// started them ends.
type SPIRE struct {
	td         spiffeid.TrustDomain
	dir        string
	serverBin  string
	agentBin   string
	serverSock string // server API (admin) socket
	agentSock  string // agent Workload API socket
	serverAddr string
	agentID    spiffeid.ID
	bundlePEM  []byte
	server     *testbin.Proc
	agent      *testbin.Proc
	tailsShown atomic.Bool // logTails has run: the cleanup need not print them again
}

// Start runs a SPIRE server and agent for t and returns once both pass their
// health checks (each bounded by 30s). Without SPIRE binaries (see the package
// doc), t is skipped, or failed when CI=true.
func Start(t testing.TB, opts Options) *SPIRE {
	t.Helper()
	if !testbin.ProcessGroups {
		testbin.Unavailable(t, "testspire", "SPIRE needs unix sockets and process groups, which this OS lacks")
	}
	opts, td := withDefaults(t, opts)
	serverBin, agentBin := binaries(t)

	began := time.Now()
	dir, err := os.MkdirTemp("/tmp", "spire-")
	if err != nil {
		t.Fatalf("testspire: %v", err)
	}
	s := &SPIRE{
		td:         td,
		dir:        dir,
		serverBin:  serverBin,
		agentBin:   agentBin,
		serverSock: filepath.Join(dir, "server.sock"),
		agentSock:  filepath.Join(dir, "agent.sock"),
	}
	// Registered first, so it runs last: after the agent and server have stopped.
	t.Cleanup(func() {
		if t.Failed() && !s.tailsShown.Load() {
			s.logTails(t)
		}
		_ = os.RemoveAll(dir)
	})
	if len(s.agentSock) > maxSocketPath {
		t.Fatalf("testspire: socket path %q is %d bytes, over %d", s.agentSock, len(s.agentSock), maxSocketPath)
	}
	for _, sub := range []string{"server", "agent"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatalf("testspire: %v", err)
		}
	}

	s.startServer(t, opts)
	serverUp := time.Since(began)

	// The agent trusts the server through its bundle, fetched over the admin socket
	// (instead of insecure_bootstrap), and attests with a one-time join token.
	s.bundlePEM = s.serverCLI(t, "bundle", "show", "-format", "pem")
	bundlePath := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundlePath, s.bundlePEM, 0o600); err != nil {
		t.Fatalf("testspire: %v", err)
	}
	var token struct {
		Value string `json:"value"`
	}
	out := s.serverCLI(t, "token", "generate", "-ttl", "600", "-output", "json")
	if err := json.Unmarshal(out, &token); err != nil || token.Value == "" {
		t.Fatalf("testspire: token generate printed %q: %v", out, err)
	}
	s.agentID, err = spiffeid.FromPath(td, "/spire/agent/join_token/"+token.Value)
	if err != nil {
		t.Fatalf("testspire: agent ID: %v", err)
	}
	s.startAgent(t, opts, bundlePath, token.Value)
	t.Logf("testspire: SPIRE %s up in %s (server %s) at %s, Workload API %s",
		td, time.Since(began).Round(time.Millisecond), serverUp.Round(time.Millisecond), s.serverAddr, s.SocketPath())
	return s
}

func withDefaults(t testing.TB, opts Options) (Options, spiffeid.TrustDomain) {
	t.Helper()
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		t.Fatalf("testspire: trust domain %q: %v", opts.TrustDomain, err)
	}
	if opts.X509SVIDTTL == 0 {
		opts.X509SVIDTTL = DefaultX509SVIDTTL
	}
	if opts.JWTSVIDTTL == 0 {
		opts.JWTSVIDTTL = DefaultJWTSVIDTTL
	}
	if opts.X509SVIDTTL < time.Second || opts.JWTSVIDTTL < time.Second {
		t.Fatalf("testspire: SVID TTLs must be at least 1s (x509 %s, jwt %s)", opts.X509SVIDTTL, opts.JWTSVIDTTL)
	}
	minCA := caTTLFactor * max(opts.X509SVIDTTL, opts.JWTSVIDTTL)
	switch {
	case opts.CATTL == 0:
		opts.CATTL = max(DefaultCATTL, minCA)
	case opts.CATTL < minCA:
		t.Fatalf("testspire: CATTL %s is under %dx the longest SVID TTL (%s): SPIRE would shorten SVIDs",
			opts.CATTL, caTTLFactor, minCA)
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "INFO"
	}
	return opts, td
}

func (s *SPIRE) startServer(t testing.TB, opts Options) {
	t.Helper()
	confPath := filepath.Join(s.dir, "server.conf")
	logPath := filepath.Join(s.dir, "server.log")
	var lastErr error
	for try := range startTries {
		port := testproc.FreePort(t)
		s.serverAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := os.WriteFile(confPath, []byte(s.serverConfig(opts, port)), 0o600); err != nil {
			t.Fatalf("testspire: %v", err)
		}
		p, err := testbin.Start("spire-server", s.serverBin, s.dir, logPath, "run", "-config", confPath)
		if err != nil {
			t.Fatalf("testspire: %v", err)
		}
		s.server = p
		err = p.WaitHealthy(healthTimeout, func() error {
			_, err := runCLIWithin(checkTimeout, s.serverBin, "healthcheck", "-socketPath", s.serverSock)
			return err
		})
		if err == nil {
			t.Cleanup(p.Stop)
			return
		}
		p.Stop()
		lastErr = err
		// Another process may have taken the free port meanwhile: try another.
		if log, _ := os.ReadFile(logPath); try+1 < startTries && strings.Contains(string(log), "address already in use") {
			_ = os.Remove(s.serverSock)
			dataDir := filepath.Join(s.dir, "server")
			if err := os.RemoveAll(dataDir); err != nil {
				t.Fatalf("testspire: %v", err)
			}
			if err := os.Mkdir(dataDir, 0o700); err != nil {
				t.Fatalf("testspire: %v", err)
			}
			continue
		}
		break
	}
	s.logTails(t)
	t.Fatalf("testspire: %v", lastErr)
}

func (s *SPIRE) startAgent(t testing.TB, opts Options, bundlePath, joinToken string) {
	t.Helper()
	confPath := filepath.Join(s.dir, "agent.conf")
	if err := os.WriteFile(confPath, []byte(s.agentConfig(opts, bundlePath, joinToken)), 0o600); err != nil {
		t.Fatalf("testspire: %v", err)
	}
	p, err := testbin.Start("spire-agent", s.agentBin, s.dir, filepath.Join(s.dir, "agent.log"), "run", "-config", confPath)
	if err != nil {
		t.Fatalf("testspire: %v", err)
	}
	s.agent = p
	t.Cleanup(p.Stop) // registered after the server's, so it runs before it
	if err := p.WaitHealthy(healthTimeout, func() error {
		_, err := runCLIWithin(checkTimeout, s.agentBin, "healthcheck", "-socketPath", s.agentSock)
		return err
	}); err != nil {
		s.logTails(t)
		t.Fatalf("testspire: %v", err)
	}
}

// serverConfig is the server's HCL. cache_reload_interval (an experimental option
// in v1.13, 5s by default) bounds how soon a new entry can reach agents.
func (s *SPIRE) serverConfig(opts Options, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server {\n")
	fmt.Fprintf(&b, "  bind_address = \"127.0.0.1\"\n")
	fmt.Fprintf(&b, "  bind_port = \"%d\"\n", port)
	fmt.Fprintf(&b, "  socket_path = %s\n", strconv.Quote(s.serverSock))
	fmt.Fprintf(&b, "  trust_domain = %s\n", strconv.Quote(s.td.Name()))
	fmt.Fprintf(&b, "  data_dir = %s\n", strconv.Quote(filepath.Join(s.dir, "server")))
	fmt.Fprintf(&b, "  log_level = %s\n", strconv.Quote(opts.LogLevel))
	fmt.Fprintf(&b, "  ca_ttl = %q\n", opts.CATTL)
	fmt.Fprintf(&b, "  default_x509_svid_ttl = %q\n", opts.X509SVIDTTL)
	fmt.Fprintf(&b, "  default_jwt_svid_ttl = %q\n", opts.JWTSVIDTTL)
	if opts.JWTIssuer != "" {
		fmt.Fprintf(&b, "  jwt_issuer = %s\n", strconv.Quote(opts.JWTIssuer))
	}
	fmt.Fprintf(&b, "  experimental {\n    cache_reload_interval = \"1s\"\n  }\n")
	fmt.Fprintf(&b, "}\n\nplugins {\n")
	fmt.Fprintf(&b, "  DataStore \"sql\" {\n    plugin_data {\n      database_type = \"sqlite3\"\n      connection_string = %s\n    }\n  }\n",
		strconv.Quote(filepath.Join(s.dir, "server", "datastore.sqlite3")))
	fmt.Fprintf(&b, "  NodeAttestor \"join_token\" {\n    plugin_data {}\n  }\n")
	// On disk, so that RestartServer brings back the same CA (a new one would not
	// chain to the bundle the agent holds).
	fmt.Fprintf(&b, "  KeyManager \"disk\" {\n    plugin_data {\n      keys_path = %s\n    }\n  }\n",
		strconv.Quote(filepath.Join(s.dir, "server", "keys.json")))
	fmt.Fprintf(&b, "}\n")
	return b.String()
}

// agentConfig is the agent's HCL. sync_interval (experimental in v1.13, 5s by
// default) is how often the agent asks the server for its entries.
func (s *SPIRE) agentConfig(opts Options, bundlePath, joinToken string) string {
	host, port, _ := net.SplitHostPort(s.serverAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "agent {\n")
	fmt.Fprintf(&b, "  server_address = %s\n", strconv.Quote(host))
	fmt.Fprintf(&b, "  server_port = %s\n", strconv.Quote(port))
	fmt.Fprintf(&b, "  socket_path = %s\n", strconv.Quote(s.agentSock))
	fmt.Fprintf(&b, "  trust_domain = %s\n", strconv.Quote(s.td.Name()))
	fmt.Fprintf(&b, "  trust_bundle_path = %s\n", strconv.Quote(bundlePath))
	fmt.Fprintf(&b, "  join_token = %s\n", strconv.Quote(joinToken))
	fmt.Fprintf(&b, "  data_dir = %s\n", strconv.Quote(filepath.Join(s.dir, "agent")))
	fmt.Fprintf(&b, "  log_level = %s\n", strconv.Quote(opts.LogLevel))
	fmt.Fprintf(&b, "  experimental {\n    sync_interval = \"1s\"\n  }\n")
	fmt.Fprintf(&b, "}\n\nplugins {\n")
	fmt.Fprintf(&b, "  NodeAttestor \"join_token\" {\n    plugin_data {}\n  }\n")
	fmt.Fprintf(&b, "  KeyManager \"memory\" {\n    plugin_data {}\n  }\n")
	fmt.Fprintf(&b, "  WorkloadAttestor \"unix\" {\n    plugin_data {}\n  }\n")
	fmt.Fprintf(&b, "}\n")
	return b.String()
}

// StopAgent stops the agent (SIGTERM, then SIGKILL after 5s) and waits for it to
// exit, as in an agent outage; the server keeps running. It is idempotent.
func (s *SPIRE) StopAgent() { s.agent.Stop() }

// SocketPath returns the agent's Workload API address, "unix:///tmp/spire-.../agent.sock",
// as workloadapi.WithAddr and SPIFFE_ENDPOINT_SOCKET take it.
func (s *SPIRE) SocketPath() string { return "unix://" + s.agentSock }

// TrustDomain returns the trust domain.
func (s *SPIRE) TrustDomain() spiffeid.TrustDomain { return s.td }

// ServerAddr returns the server's loopback address, "127.0.0.1:port".
func (s *SPIRE) ServerAddr() string { return s.serverAddr }

// AgentID returns the agent's SPIFFE ID (spiffe://td/spire/agent/join_token/...),
// the parent of the entries RegisterWorkload creates.
func (s *SPIRE) AgentID() spiffeid.ID { return s.agentID }

// BundlePEM returns the trust domain's X.509 authorities as PEM, as the server
// gave them at start (the agent's bootstrap bundle).
func (s *SPIRE) BundlePEM() []byte { return append([]byte(nil), s.bundlePEM...) }

// BundleJWKS returns the trust domain's current bundle as SPIFFE bundle JSON (a JWKS
// with x509-svid and jwt-svid keys), from `spire-server bundle show -format spiffe`;
// spiffebundle.Parse reads it.
func (s *SPIRE) BundleJWKS(t testing.TB) []byte {
	t.Helper()
	return s.serverCLI(t, "bundle", "show", "-format", "spiffe")
}

// ServerCommand runs `spire-server <args> -socketPath <server API socket>` and
// returns its stdout, failing t if it fails; args start with the subcommand, as in
// ServerCommand(t, "entry", "show", "-output", "json").
func (s *SPIRE) ServerCommand(t testing.TB, args ...string) []byte {
	t.Helper()
	return s.serverCLI(t, args...)
}

func (s *SPIRE) serverCLI(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := runCLI(s.serverBin, append(args, "-socketPath", s.serverSock)...)
	if err != nil {
		t.Fatalf("testspire: %v", err)
	}
	return out
}

// logTails prints the end of the server's and the agent's logs.
func (s *SPIRE) logTails(t testing.TB) {
	t.Helper()
	s.tailsShown.Store(true)
	testbin.LogTails(t, "testspire", s.server, s.agent)
}

// ServerSocketPath returns the path of the server API (admin) unix socket, as
// spire-server's -socketPath takes it. Whoever can connect to it is an admin of
// the server API.
func (s *SPIRE) ServerSocketPath() string { return s.serverSock }

// StopServer stops the spire-server (SIGTERM, then SIGKILL after 5s), as in a
// server outage; the agent keeps running on its cached SVIDs. RestartServer
// starts it again.
func (s *SPIRE) StopServer() { s.server.Stop() }

// RestartServer starts the spire-server again after StopServer, with the same
// configuration, port and datastore (entries and agents survive), and waits for
// its health check (bounded by 30s).
func (s *SPIRE) RestartServer(t testing.TB) {
	t.Helper()
	p, err := testbin.Start("spire-server", s.serverBin, s.dir, filepath.Join(s.dir, "server.log"), "run", "-config", filepath.Join(s.dir, "server.conf"))
	if err != nil {
		t.Fatalf("testspire: %v", err)
	}
	s.server = p
	t.Cleanup(p.Stop)
	if err := p.WaitHealthy(healthTimeout, func() error {
		_, err := runCLIWithin(checkTimeout, s.serverBin, "healthcheck", "-socketPath", s.serverSock)
		return err
	}); err != nil {
		s.logTails(t)
		t.Fatalf("testspire: restart: %v", err)
	}
}
