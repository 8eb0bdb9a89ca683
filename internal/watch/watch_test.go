package watch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/confcheck"
)

const minimalConfig = `sts: {url: "https://sts.example:8443", credential_file: token}
state_dir: state
spire: {server_socket: /run/spire/api.sock, upstream: spire}
`

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"minimal", minimalConfig, ""},
		{"loopback http", `sts: {url: "http://127.0.0.1:8080", credential_file: t}
state_dir: s
spire: {server_socket: /s, upstream: spire}`, ""},
		{"kubernetes", `sts: {url: "https://sts", credential_file: t}
state_dir: s
kubernetes: {upstream: k8s, binding_attributes: [pod_uid, node], instance_attributes: [pod]}`, ""},
		{"remote http", `sts: {url: "http://sts.example", credential_file: t}
state_dir: s
spire: {server_socket: /s, upstream: spire}`, "sts.url must be https"},
		{"url with path", `sts: {url: "https://sts/admin", credential_file: t}
state_dir: s
spire: {server_socket: /s, upstream: spire}`, "base URL"},
		{"no credential", `sts: {url: "https://sts"}
state_dir: s
spire: {server_socket: /s, upstream: spire}`, "sts.credential_file is required"},
		{"no source", `sts: {url: "https://sts", credential_file: t}
state_dir: s`, "at least one source"},
		{"no state dir", `sts: {url: "https://sts", credential_file: t}
spire: {server_socket: /s, upstream: spire}`, "state_dir is required"},
		{"unknown key", minimalConfig + "colour: blue\n", "colour: unknown key"},
		{"poll too fast", `sts: {url: "https://sts", credential_file: t}
state_dir: s
spire: {server_socket: /s, upstream: spire, poll_interval: 1ms}`, "spire.poll_interval must be between"},
		{"bad duration", `sts: {url: "https://sts", credential_file: t, timeout: soon}
state_dir: s
spire: {server_socket: /s, upstream: spire}`, "not a duration"},
		{"bad upstream", `sts: {url: "https://sts", credential_file: t}
state_dir: s
spire: {server_socket: /s, upstream: "a b"}`, "spire.upstream must name"},
		{"attribute not computable", `sts: {url: "https://sts", credential_file: t}
state_dir: s
kubernetes: {upstream: k8s, binding_attributes: [pod_uid, image], instance_attributes: [pod]}`, `"image" is not an attribute of the kubernetes preset`},
		{"binding without pod_uid", `sts: {url: "https://sts", credential_file: t}
state_dir: s
kubernetes: {upstream: k8s, binding_attributes: [node], instance_attributes: [pod]}`, "binding_attributes must include pod_uid"},
		{"instance without pod", `sts: {url: "https://sts", credential_file: t}
state_dir: s
kubernetes: {upstream: k8s, binding_attributes: [pod_uid]}`, "instance_attributes must include pod"},
		{"attribute in both", `sts: {url: "https://sts", credential_file: t}
state_dir: s
kubernetes: {upstream: k8s, binding_attributes: [pod_uid, pod], instance_attributes: [pod]}`, "cannot both identify"},
		{"queue too big", minimalConfig + "queue_size: 100000000\n", "queue_size must be between"},
		{"bad log level", minimalConfig + "log_level: loud\n", "log_level must be"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(c.yaml))
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if cfg.QueueSize != DefaultQueueSize || cfg.STS.Concurrency != DefaultConcurrency {
					t.Fatalf("defaults not applied: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

func TestLoadConfigResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "stswatch.yaml")
	if err := os.WriteFile(p, []byte(minimalConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.STS.CredentialFile != filepath.Join(dir, "token") || cfg.StateDir != filepath.Join(dir, "state") || cfg.SPIRE.ServerSocket != "/run/spire/api.sock" {
		t.Fatalf("paths not resolved against the config's directory: %+v %+v", cfg.STS, cfg.SPIRE)
	}
	if time.Duration(cfg.SPIRE.PollInterval) != DefaultPollInterval {
		t.Fatalf("poll interval %v", cfg.SPIRE.PollInterval)
	}
}

// TestLoadConfigProblems: the watcher's configuration reports its problems as
// sts.yaml's are reported: all at once, one per line, each with the file and the
// line, a mistyped key with its key path and the key it may have meant.
func TestLoadConfigProblems(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stswatch.yaml")
	if err := os.WriteFile(p, []byte(`sts: {url: "https://sts.example:8443", credential_file: token}
stat_dir: state
spire:
  server_socket: /run/spire/api.sock
  upstream: spire
  pol_interval: 1s
  poll_interval: 1ms
kubernetes: {upstream: k8s, binding_attributes: [pod_uid], instance_attributes: [pod], namespace: [a]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	want := p + `:1: state_dir is required (what each source last saw, to catch deletions across restarts)
` + p + `:2: stat_dir: unknown key (did you mean "state_dir"?)
` + p + `:6: spire.pol_interval: unknown key (did you mean "poll_interval"?)
` + p + `:7: spire.poll_interval must be between 100ms and 5m0s
` + p + `:8: kubernetes.namespace: unknown key (did you mean "namespaces"?)`
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
	if ce := (*confcheck.Error)(nil); !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("not a *confcheck.Error with 5 problems: %#v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte("sts: {url: \"http://[::1]:1\", credential_file: t}\nstate_dir: s\nkubernetes: {upstream: k, binding_attributes: [pod_uid], instance_attributes: [pod], namespaces: [a]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err == nil && (cfg.STS.URL == "" || cfg.StateDir == "" || (cfg.SPIRE == nil && cfg.Kubernetes == nil)) {
			t.Fatalf("accepted an incomplete config: %q", data)
		}
	})
}

func TestQueueCoalescesAndBounds(t *testing.T) {
	fullCalls := 0
	q := newQueue(2, func() { fullCalls++ })
	ctx := context.Background()
	a1, _ := q.put(ctx, Report{Kind: KindRevoke, Upstream: "u", Selector: "sub=a", Reason: "first"})
	a2, _ := q.put(ctx, Report{Kind: KindRevoke, Upstream: "u", Selector: "sub=a", Reason: "second"})
	if q.len() != 1 {
		t.Fatalf("the same revoke twice is queued %d times", q.len())
	}
	if _, err := q.put(ctx, Report{Kind: KindChange, Upstream: "u", Subject: "s", Instance: "p1"}); err != nil {
		t.Fatal(err)
	}
	// Full: a third distinct report waits (never dropped) until room appears or ctx ends.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := q.put(short, Report{Kind: KindChange, Upstream: "u", Subject: "s", Instance: "p2"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put into a full queue: %v, want it to wait until ctx ends", err)
	}
	if fullCalls != 1 {
		t.Fatalf("onFull called %d times", fullCalls)
	}
	got := make(chan error, 1)
	go func() {
		_, err := q.put(ctx, Report{Kind: KindChange, Upstream: "u", Subject: "s", Instance: "p3"})
		got <- err
	}()
	it, err := q.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if it.r.Reason != "second" || len(it.tickets) != 2 {
		t.Fatalf("coalesced report %+v with %d tickets, want the latest with both tickets", it.r, len(it.tickets))
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiting put failed once room appeared: %v", err)
	}
	for _, tk := range it.tickets {
		tk.finish()
	}
	if err := Wait(ctx, []*Ticket{a1, a2}); err != nil {
		t.Fatal(err)
	}
	if q.len() != 2 {
		t.Fatalf("queue length %d, want 2", q.len())
	}
}

func TestCredentialRereadOnChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		t.Helper()
		// Like the kubelet: a new file renamed over the old one.
		tmp := p + ".new"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	write("first-token\n")
	c := &credential{path: p}
	if tok, err := c.get(false); err != nil || tok != "first-token" {
		t.Fatalf("get: %q %v", tok, err)
	}
	write("second-token-longer")
	if tok, err := c.get(false); err != nil || tok != "second-token-longer" {
		t.Fatalf("after rotation: %q %v", tok, err)
	}
	write("two tokens")
	if _, err := c.get(false); err == nil {
		t.Fatal("a credential with a space was accepted")
	}
	write("")
	if _, err := c.get(true); err == nil {
		t.Fatal("an empty credential was accepted")
	}
}

func TestDiffSPIRE(t *testing.T) {
	const (
		td     = "spiffe://example.org"
		agentA = td + "/spire/agent/join_token/a"
		agentB = td + "/spire/agent/join_token/b"
		alias  = td + "/node/cluster"
		server = td + "/spire/server"
	)
	base := func() *spireState {
		return &spireState{
			Entries: map[string]spireEntry{
				"e1": {SPIFFEID: td + "/api", Parent: agentA, Selectors: []string{"unix:uid:1"}},
				"e2": {SPIFFEID: td + "/db", Parent: agentB, Selectors: []string{"unix:uid:2"}},
				"al": {SPIFFEID: alias, Parent: server, Selectors: []string{"join_token:a"}},
				"e3": {SPIFFEID: td + "/cron", Parent: alias, Selectors: []string{"unix:uid:3"}},
			},
			Agents: map[string]spireAgent{
				agentA: {Selectors: []string{"join_token:a"}},
				agentB: {Selectors: []string{"join_token:b"}},
			},
		}
	}
	cases := []struct {
		name string
		edit func(s *spireState)
		want []string // ID/event
	}{
		{"nothing changed", func(*spireState) {}, nil},
		{"entry added", func(s *spireState) { s.Entries["e4"] = spireEntry{SPIFFEID: td + "/new", Parent: agentA} }, nil},
		{"entry deleted", func(s *spireState) { delete(s.Entries, "e1") }, []string{td + "/api entry_deleted"}},
		{"selectors changed", func(s *spireState) {
			e := s.Entries["e2"]
			e.Selectors = []string{"unix:uid:20"}
			s.Entries["e2"] = e
		}, []string{td + "/db entry_changed"}},
		{"SPIFFE ID changed: the old one", func(s *spireState) {
			e := s.Entries["e2"]
			e.SPIFFEID = td + "/db2"
			s.Entries["e2"] = e
		}, []string{td + "/db entry_changed"}},
		{"parent changed", func(s *spireState) {
			e := s.Entries["e2"]
			e.Parent = agentA
			s.Entries["e2"] = e
		}, []string{td + "/db entry_changed"}},
		{"agent banned: itself, its children, and the alias it alone served", func(s *spireState) {
			s.Agents[agentA] = spireAgent{Banned: true, Selectors: []string{"join_token:a"}}
		}, []string{td + "/api agent_banned", td + "/cron agent_banned", agentA + " agent_banned"}},
		{"agent evicted", func(s *spireState) { delete(s.Agents, agentB) }, []string{td + "/db agent_evicted", agentB + " agent_evicted"}},
		{"agent evicted while another still serves the alias", func(s *spireState) {
			delete(s.Agents, agentA)
			s.Agents[td+"/spire/agent/join_token/c"] = spireAgent{Selectors: []string{"join_token:a"}}
		}, []string{td + "/api agent_evicted", agentA + " agent_evicted"}},
		{"entry deleted and its agent evicted: one revoke", func(s *spireState) {
			delete(s.Entries, "e2")
			delete(s.Agents, agentB)
		}, []string{td + "/db entry_deleted", agentB + " agent_evicted"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cur := base()
			c.edit(cur)
			var got []string
			for _, r := range diffSPIRE(base(), cur) {
				got = append(got, r.ID+" "+r.Event)
			}
			want := append([]string(nil), c.want...)
			sortStrings(want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("revokes %q, want %q", got, want)
			}
		})
	}
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sf, err := newStateFile(dir, "s.json")
	if err != nil {
		t.Fatal(err)
	}
	var st spireState
	if found, err := sf.load(SourceSPIRE, &st); err != nil || found {
		t.Fatalf("empty dir: found %v err %v", found, err)
	}
	want := spireState{Entries: map[string]spireEntry{"e": {SPIFFEID: "spiffe://x/y", Selectors: []string{"a:b"}}}, Agents: map[string]spireAgent{}}
	if err := sf.save(SourceSPIRE, &want); err != nil {
		t.Fatal(err)
	}
	if found, err := sf.load(SourceSPIRE, &st); err != nil || !found || !reflect.DeepEqual(st, want) {
		t.Fatalf("load: %+v found %v err %v", st, found, err)
	}
	if _, err := sf.load(SourceKubernetes, &st); err == nil {
		t.Fatal("a state file of another source was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sf.load(SourceSPIRE, &st); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("corrupt state: %v", err)
	}
}
