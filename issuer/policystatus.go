package issuer

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeconduct/safeconduct/policy"
)

// PathPolicyStatus is the operations listener's (metrics_listen) view of the live
// policy: GET, JSON (PolicyStatus). It is not served on the token listener: it
// names policy files and quotes their problems.
const PathPolicyStatus = "/policyz"

// maxReloadError bounds the error text of a failed reload kept in the status.
const maxReloadError = 4 << 10

// PolicyStatus is the live policy (the one decisions use) and the last reload.
type PolicyStatus struct {
	// Digest identifies the live policy's content (policy.Policy.Digest:
	// "sha256:..."); empty when the Decider does not say.
	Digest string `json:"digest"`
	// Files are the live policy's files and their SHA-256 (compare with
	// sha256sum on the server's files).
	Files []policy.FileDigest `json:"files,omitempty"`
	// LoadedAt is when the live policy was put in force.
	LoadedAt time.Time `json:"loaded_at"`
	// LastReload is the last reload attempt; nil before the first.
	LastReload *ReloadStatus `json:"last_reload,omitempty"`
}

// ReloadStatus is one reload attempt.
type ReloadStatus struct {
	At time.Time `json:"at"`
	// Trigger is "signal" (SIGHUP) or "file change".
	Trigger string `json:"trigger"`
	// Result is "ok" or "error". After an error the previous policy stays live.
	Result string `json:"result"`
	// Error is the load error (file:line problems, one per line), at most 4 KiB;
	// policy problems quote policy text, never token or key material.
	Error string `json:"error,omitempty"`
}

// policyIdentity is what policy.Policy tells about its content.
type policyIdentity interface {
	Digest() string
	Files() []policy.FileDigest
}

// policyState holds the status and its gauges.
type policyState struct {
	mu     sync.Mutex
	status PolicyStatus
	info   *prometheus.GaugeVec
	loaded prometheus.Gauge
	lastOK prometheus.Gauge
	lastAt prometheus.Gauge
}

func newPolicyState(reg *prometheus.Registry) *policyState {
	ps := &policyState{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "safeconduct_policy_info",
			Help: "The live policy: 1, with its content digest (sha256 of the sha256sum listing of its files).",
		}, []string{"digest"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safeconduct_policy_loaded_timestamp_seconds",
			Help: "When the live policy was put in force (Unix time).",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safeconduct_policy_last_reload_success",
			Help: "1 when the last policy reload succeeded (or none was tried), 0 when it failed and an older policy is live.",
		}),
		lastAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safeconduct_policy_last_reload_timestamp_seconds",
			Help: "When the last policy reload was tried (Unix time; 0 before the first).",
		}),
	}
	ps.lastOK.Set(1)
	reg.MustRegister(ps.info, ps.loaded, ps.lastOK, ps.lastAt)
	return ps
}

// setLive records d as the live policy, put in force at now.
func (ps *policyState) setLive(d Decider, now time.Time) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.status.Digest, ps.status.Files = "", nil
	if id, ok := d.(policyIdentity); ok {
		ps.status.Digest, ps.status.Files = id.Digest(), id.Files()
	}
	ps.status.LoadedAt = now
	ps.info.Reset()
	ps.info.WithLabelValues(ps.status.Digest).Set(1)
	ps.loaded.Set(float64(now.UnixNano()) / 1e9)
}

// reloaded records a reload attempt; err is nil when it succeeded.
func (ps *policyState) reloaded(trigger string, now time.Time, err error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	r := &ReloadStatus{At: now, Trigger: trigger, Result: "ok"}
	ps.lastOK.Set(1)
	if err != nil {
		r.Result = "error"
		r.Error = err.Error()
		if len(r.Error) > maxReloadError {
			r.Error = strings.ToValidUTF8(r.Error[:maxReloadError], "") + "\n..."
		}
		ps.lastOK.Set(0)
	}
	ps.status.LastReload = r
	ps.lastAt.Set(float64(now.UnixNano()) / 1e9)
}

func (ps *policyState) get() PolicyStatus {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	st := ps.status
	if st.LastReload != nil {
		r := *st.LastReload
		st.LastReload = &r
	}
	st.Files = append([]policy.FileDigest(nil), st.Files...)
	return st
}

// PolicyStatus returns the live policy's status.
func (s *Server) PolicyStatus() PolicyStatus { return s.policyState.get() }

func (s *Server) handlePolicyStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.PolicyStatus())
}
