package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/safeconduct/safeconduct/revocation"
)

// Source names in metrics and logs.
const (
	SourceSPIRE      = "spire"
	SourceKubernetes = "kubernetes"
)

const (
	spirePageSize    = 500
	spireCallTimeout = 30 * time.Second
	// maxSPIREObjects bounds entries + agents held (and persisted).
	maxSPIREObjects = 2_000_000
)

// spireEntry is what the watcher keeps of a registration entry.
type spireEntry struct {
	SPIFFEID  string   `json:"spiffe_id"`
	Parent    string   `json:"parent"`
	Selectors []string `json:"selectors"` // "type:value", sorted
}

// spireAgent is what the watcher keeps of an attested agent.
type spireAgent struct {
	Banned    bool     `json:"banned,omitempty"`
	Selectors []string `json:"selectors,omitempty"`
}

// spireState is the SPIRE server's entries (by entry ID) and agents (by SPIFFE ID).
type spireState struct {
	Entries map[string]spireEntry `json:"entries"`
	Agents  map[string]spireAgent `json:"agents"`
}

// spireRevoke is one SPIFFE ID whose tokens must be revoked, and why.
type spireRevoke struct {
	ID     string
	Event  string // entry_deleted, entry_changed, agent_evicted, agent_banned
	Reason string
}

// diffSPIRE compares the state last reported with the current one and returns the
// SPIFFE IDs to revoke, sorted by ID, each once:
//   - an entry deleted, or whose SPIFFE ID, parent or selectors changed: its (old)
//     SPIFFE ID. Tokens do not say which entry a workload was attested under, so
//     every token of the ID goes; workloads still entitled exchange again.
//   - an agent evicted (gone from the list) or banned: the agent's own ID and the
//     IDs of the entries parented to it; and the IDs of entries parented to a
//     node alias that the agent's selectors matched, when no agent left (not
//     banned) matches that alias any more.
func diffSPIRE(old, cur *spireState) []spireRevoke {
	out := map[string]spireRevoke{}
	add := func(id, event, reason string) {
		if id == "" {
			return
		}
		if _, ok := out[id]; !ok {
			out[id] = spireRevoke{ID: id, Event: event, Reason: reason}
		}
	}
	for eid, oe := range old.Entries {
		ne, ok := cur.Entries[eid]
		switch {
		case !ok:
			add(oe.SPIFFEID, "entry_deleted", "spire: registration entry "+eid+" deleted")
		case ne.SPIFFEID != oe.SPIFFEID || ne.Parent != oe.Parent || !slices.Equal(ne.Selectors, oe.Selectors):
			add(oe.SPIFFEID, "entry_changed", "spire: registration entry "+eid+" changed")
		}
	}
	var lost []string
	for aid, oa := range old.Agents {
		na, ok := cur.Agents[aid]
		switch {
		case !ok:
			lost = append(lost, aid)
			add(aid, "agent_evicted", "spire: agent "+aid+" evicted")
		case na.Banned && !oa.Banned:
			lost = append(lost, aid)
			add(aid, "agent_banned", "spire: agent "+aid+" banned")
		}
	}
	sort.Strings(lost)
	for _, aid := range lost {
		oa := old.Agents[aid]
		event, verb := "agent_evicted", "evicted"
		if na, ok := cur.Agents[aid]; ok && na.Banned {
			event, verb = "agent_banned", "banned"
		}
		reason := "spire: agent " + aid + " " + verb
		parents := map[string]bool{aid: true}
		server := serverID(aid)
		for _, e := range old.Entries {
			if e.Parent == server && subset(e.Selectors, oa.Selectors) && !aliasStillServed(cur, server, e.Selectors) {
				parents[e.SPIFFEID] = true
			}
		}
		for _, e := range old.Entries {
			if parents[e.Parent] {
				add(e.SPIFFEID, event, reason)
			}
		}
	}
	ids := make([]string, 0, len(out))
	for id := range out {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	res := make([]spireRevoke, len(ids))
	for i, id := range ids {
		res[i] = out[id]
	}
	return res
}

// aliasStillServed reports whether an agent of cur (not banned) still matches a
// node alias with these selectors.
func aliasStillServed(cur *spireState, server string, sel []string) bool {
	for aid, a := range cur.Agents {
		if !a.Banned && serverID(aid) == server && subset(sel, a.Selectors) {
			return true
		}
	}
	return false
}

// serverID is spiffe://<trust domain>/spire/server, the parent of node aliases,
// for an ID of that trust domain.
func serverID(id string) string {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" {
		return ""
	}
	return "spiffe://" + u.Host + "/spire/server"
}

// subset: every element of a (sorted) is in b (sorted); an empty a is no subset.
func subset(a, b []string) bool {
	if len(a) == 0 {
		return false
	}
	for _, s := range a {
		if _, ok := slices.BinarySearch(b, s); !ok {
			return false
		}
	}
	return true
}

func selectorStrings(sel []*types.Selector) []string {
	out := make([]string, 0, len(sel))
	for _, s := range sel {
		out = append(out, s.GetType()+":"+s.GetValue())
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func idString(id *types.SPIFFEID) string {
	if id == nil || id.GetTrustDomain() == "" {
		return ""
	}
	return "spiffe://" + id.GetTrustDomain() + id.GetPath()
}

// SPIRESource polls the SPIRE server API (entries and agents; the API has no
// watch) and revokes the tokens of the SPIFFE IDs affected by what changed.
type SPIRESource struct {
	cfg      *SPIREConfig
	rep      *Reporter
	m        *Metrics
	log      *slog.Logger
	state    *stateFile
	conn     *grpc.ClientConn
	entries  entryv1.EntryClient
	agents   agentv1.AgentClient
	mu       sync.Mutex
	readyErr error
	polls    func() // test hook: called after each completed poll
}

// NewSPIRESource connects (lazily) to the server's admin socket.
func NewSPIRESource(cfg *SPIREConfig, stateDir string, rep *Reporter, m *Metrics, log *slog.Logger) (*SPIRESource, error) {
	st, err := newStateFile(stateDir, "spire-state.json")
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+cfg.ServerSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}
	m.SourceUp(SourceSPIRE, false)
	return &SPIRESource{
		cfg: cfg, rep: rep, m: m, log: log.With(slog.String("source", SourceSPIRE)), state: st, conn: conn,
		entries: entryv1.NewEntryClient(conn), agents: agentv1.NewAgentClient(conn),
		readyErr: errors.New("spire: not listed yet"),
	}, nil
}

// Ready is nil once a list has succeeded and the last poll did.
func (s *SPIRESource) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readyErr
}

func (s *SPIRESource) setReady(err error) {
	s.mu.Lock()
	was := s.readyErr
	s.readyErr = err
	s.mu.Unlock()
	s.m.SourceUp(SourceSPIRE, err == nil)
	switch {
	case err != nil && (was == nil || was.Error() != err.Error()):
		s.log.Warn("SPIRE server API unreachable or failing; keeping the last state, retrying", slog.String("error", err.Error()))
	case err == nil && was != nil:
		s.log.Info("SPIRE server API in sync")
	}
}

// Run polls until ctx ends. The state persisted from the previous run (if any)
// is the base of the first diff, so entries deleted and agents evicted while the
// watcher was down are revoked on its first poll.
func (s *SPIRESource) Run(ctx context.Context) error {
	defer s.conn.Close()
	var last spireState
	found, err := s.state.load(SourceSPIRE, &last)
	if err != nil {
		return err
	}
	if found {
		s.log.Info("resuming from the persisted state", slog.Int("entries", len(last.Entries)), slog.Int("agents", len(last.Agents)))
	}
	interval := time.Duration(s.cfg.PollInterval)
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = interval
		cur, err := s.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.setReady(err)
			continue
		}
		s.setReady(nil)
		if found {
			var tickets []*Ticket
			for _, r := range diffSPIRE(&last, cur) {
				s.m.Event(SourceSPIRE, r.Event)
				sel, err := revocation.NewSelector(revocation.KeyUpstream, s.cfg.Upstream, revocation.KeySubject, r.ID)
				if err != nil {
					s.log.Error("cannot build a selector for this SPIFFE ID; not reported", slog.String("spiffe_id", r.ID), slog.String("error", err.Error()))
					s.m.reports.WithLabelValues(SourceSPIRE, KindRevoke, OutcomeRejected).Inc()
					continue
				}
				s.log.Info("revoking", slog.String("event", r.Event), slog.String("spiffe_id", r.ID), slog.String("reason", r.Reason))
				t, err := s.rep.Report(ctx, Report{Kind: KindRevoke, Source: SourceSPIRE, Upstream: s.cfg.Upstream, Subject: r.ID,
					Selector: sel.String(), Reason: r.Reason})
				if err != nil {
					return nil // ctx ended; the state is not advanced
				}
				tickets = append(tickets, t)
			}
			// The state advances only once every report is dealt with: a restart
			// before then diffs against the old state again.
			if err := Wait(ctx, tickets); err != nil {
				return nil
			}
		}
		if err := s.state.save(SourceSPIRE, cur); err != nil {
			s.log.Error("cannot persist the state; deletions during a restart may be missed until it can", slog.String("error", err.Error()))
			s.setReady(fmt.Errorf("spire: state not persisted: %v", err))
		}
		last, found = *cur, true
		if s.polls != nil {
			s.polls()
		}
	}
}

// list reads every entry and agent (paginated).
func (s *SPIRESource) list(ctx context.Context) (*spireState, error) {
	cur := &spireState{Entries: map[string]spireEntry{}, Agents: map[string]spireAgent{}}
	token := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, spireCallTimeout)
		resp, err := s.entries.ListEntries(cctx, &entryv1.ListEntriesRequest{
			PageSize: spirePageSize, PageToken: token,
			OutputMask: &types.EntryMask{SpiffeId: true, ParentId: true, Selectors: true},
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("spire: list entries: %w", err)
		}
		for _, e := range resp.GetEntries() {
			cur.Entries[e.GetId()] = spireEntry{SPIFFEID: idString(e.GetSpiffeId()), Parent: idString(e.GetParentId()), Selectors: selectorStrings(e.GetSelectors())}
		}
		if len(cur.Entries) > maxSPIREObjects {
			return nil, fmt.Errorf("spire: over %d entries", maxSPIREObjects)
		}
		token = resp.GetNextPageToken()
		if token == "" || len(resp.GetEntries()) == 0 {
			break
		}
	}
	token = ""
	for {
		cctx, cancel := context.WithTimeout(ctx, spireCallTimeout)
		resp, err := s.agents.ListAgents(cctx, &agentv1.ListAgentsRequest{
			PageSize: spirePageSize, PageToken: token,
			OutputMask: &types.AgentMask{Selectors: true, Banned: true},
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("spire: list agents: %w", err)
		}
		for _, a := range resp.GetAgents() {
			cur.Agents[idString(a.GetId())] = spireAgent{Banned: a.GetBanned(), Selectors: selectorStrings(a.GetSelectors())}
		}
		if len(cur.Agents)+len(cur.Entries) > maxSPIREObjects {
			return nil, fmt.Errorf("spire: over %d entries and agents", maxSPIREObjects)
		}
		token = resp.GetNextPageToken()
		if token == "" || len(resp.GetAgents()) == 0 {
			break
		}
	}
	return cur, nil
}
