package testspire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const (
	propagationTimeout = 15 * time.Second
	fetchTimeout       = 10 * time.Second
	fetchTryTimeout    = 2 * time.Second

	// gRPC status codes in `entry create -output json` results.
	codeOK            = 0
	codeAlreadyExists = 6
)

// RegisterWorkload creates a registration entry for spiffe://<trust domain><path>
// (a missing leading "/" is added) parented to the agent, with the given selectors
// ("type:value", as `spire-server entry create -selector` takes them), or
// unix:uid:<this process's uid> when none are given, so this test process is the
// workload. An identical entry that already exists is accepted.
//
// When every selector matches this process (unix:uid, unix:gid or unix:pid with
// its own values), RegisterWorkload then waits, up to 15s, until the agent serves an
// X.509-SVID with the ID through the Workload API; with other selectors it cannot
// observe that and returns once the entry is created.
func (s *SPIRE) RegisterWorkload(t testing.TB, spiffeIDPath string, selectors ...string) spiffeid.ID {
	t.Helper()
	if !strings.HasPrefix(spiffeIDPath, "/") {
		spiffeIDPath = "/" + spiffeIDPath
	}
	id, err := spiffeid.FromPath(s.td, spiffeIDPath)
	if err != nil {
		t.Fatalf("testspire: SPIFFE ID path %q: %v", spiffeIDPath, err)
	}
	if len(selectors) == 0 {
		selectors = []string{"unix:uid:" + strconv.Itoa(os.Getuid())}
	}
	args := []string{"entry", "create", "-parentID", s.agentID.String(), "-spiffeID", id.String(), "-output", "json"}
	for _, sel := range selectors {
		args = append(args, "-selector", sel)
	}
	created := time.Now()
	out := s.serverCLI(t, args...)
	// entry create exits 0 even when the entry was refused: the status says.
	var res struct {
		Results []struct {
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != 1 {
		t.Fatalf("testspire: entry create for %s printed %q: %v", id, out, err)
	}
	switch st := res.Results[0].Status; st.Code {
	case codeOK:
	case codeAlreadyExists:
		t.Logf("testspire: entry for %s with selectors %v already exists", id, selectors)
	default:
		t.Fatalf("testspire: entry create for %s with selectors %v: status %d: %s", id, selectors, st.Code, st.Message)
	}
	if !selectsSelf(selectors) {
		t.Logf("testspire: entry for %s created; selectors %v do not all match this process, so its arrival at the agent is not awaited", id, selectors)
		return id
	}
	if err := s.awaitX509SVID(id); err != nil {
		s.logTails(t)
		t.Fatalf("testspire: agent did not serve %s within %s of its entry's creation: %v", id, propagationTimeout, err)
	}
	t.Logf("testspire: entry for %s reached the agent %s after its creation", id, time.Since(created).Round(time.Millisecond))
	return id
}

// selectsSelf reports whether every selector matches this process in the eyes of
// the agent's unix workload attestor.
func selectsSelf(selectors []string) bool {
	self := map[string]bool{
		"unix:uid:" + strconv.Itoa(os.Getuid()): true,
		"unix:gid:" + strconv.Itoa(os.Getgid()): true,
		"unix:pid:" + strconv.Itoa(os.Getpid()): true,
	}
	for _, sel := range selectors {
		if !self[sel] {
			return false
		}
	}
	return true
}

// awaitX509SVID polls the Workload API until it serves an X.509-SVID for id.
func (s *SPIRE) awaitX509SVID(id spiffeid.ID) error {
	deadline := time.Now().Add(propagationTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTryTimeout)
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(s.SocketPath()))
		cancel()
		if err == nil {
			if findX509(svids, id) != nil {
				return nil
			}
			err = fmt.Errorf("served only %v", x509IDs(svids))
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval)
	}
}

// FetchJWTSVID fetches a JWT-SVID for audience through the agent's Workload API
// and returns it in compact form. When several entries match this process the agent
// picks one; FetchJWTSVIDFor names it.
func (s *SPIRE) FetchJWTSVID(t testing.TB, audience string) string {
	t.Helper()
	return s.fetchJWTSVID(t, jwtsvid.Params{Audience: audience})
}

// FetchJWTSVIDFor fetches a JWT-SVID with subject id for audience through the
// agent's Workload API and returns it in compact form.
func (s *SPIRE) FetchJWTSVIDFor(t testing.TB, id spiffeid.ID, audience string) string {
	t.Helper()
	return s.fetchJWTSVID(t, jwtsvid.Params{Audience: audience, Subject: id})
}

func (s *SPIRE) fetchJWTSVID(t testing.TB, params jwtsvid.Params) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	svid, err := workloadapi.FetchJWTSVID(ctx, params, workloadapi.WithAddr(s.SocketPath()))
	if err != nil {
		t.Fatalf("testspire: fetch JWT-SVID (audience %q, subject %q): %v", params.Audience, params.Subject, err)
	}
	return svid.Marshal()
}

// FetchX509SVID fetches this process's default X.509-SVID (the first the agent
// serves) through the Workload API. FetchX509SVIDFor names the one wanted.
func (s *SPIRE) FetchX509SVID(t testing.TB) *x509svid.SVID {
	t.Helper()
	svids := s.fetchX509SVIDs(t)
	return svids[0]
}

// FetchX509SVIDFor fetches this process's X.509-SVID for id through the Workload API.
func (s *SPIRE) FetchX509SVIDFor(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	svids := s.fetchX509SVIDs(t)
	svid := findX509(svids, id)
	if svid == nil {
		t.Fatalf("testspire: the agent serves no X.509-SVID for %s, only %v", id, x509IDs(svids))
	}
	return svid
}

func (s *SPIRE) fetchX509SVIDs(t testing.TB) []*x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(s.SocketPath()))
	if err == nil && len(svids) == 0 {
		err = errors.New("no SVIDs")
	}
	if err != nil {
		t.Fatalf("testspire: fetch X.509-SVIDs: %v", err)
	}
	return svids
}

func findX509(svids []*x509svid.SVID, id spiffeid.ID) *x509svid.SVID {
	for _, svid := range svids {
		if svid.ID == id {
			return svid
		}
	}
	return nil
}

func x509IDs(svids []*x509svid.SVID) []string {
	ids := make([]string, len(svids))
	for i, svid := range svids {
		ids[i] = svid.ID.String()
	}
	return ids
}
