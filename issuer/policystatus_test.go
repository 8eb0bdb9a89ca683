package issuer

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/safeconduct/safeconduct/policy"
)

func TestPolicyStateReloads(t *testing.T) {
	ps := newPolicyState(prometheus.NewRegistry())
	p, err := policy.Parse("p.yaml", []byte("rules: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	ps.setLive(p, t0)
	if st := ps.get(); st.Digest != p.Digest() || !st.LoadedAt.Equal(t0) || st.LastReload != nil || len(st.Files) != 1 {
		t.Fatalf("status: %+v", st)
	}
	if gaugeValue(t, ps.lastOK) != 1 || gaugeValue(t, ps.info.WithLabelValues(p.Digest())) != 1 {
		t.Error("gauges at start")
	}
	// A long error is cut at maxReloadError bytes, on a character boundary.
	long := errors.New(strings.Repeat("é", maxReloadError))
	ps.reloaded("signal", t0.Add(time.Minute), long)
	st := ps.get()
	if st.LastReload.Result != "error" || len(st.LastReload.Error) > maxReloadError+4 || !utf8.ValidString(st.LastReload.Error) ||
		!strings.HasSuffix(st.LastReload.Error, "\n...") {
		t.Errorf("reload error kept as %d bytes", len(st.LastReload.Error))
	}
	if st.Digest != p.Digest() || gaugeValue(t, ps.lastOK) != 0 {
		t.Error("a failed reload must keep the live digest and set the gauge to 0")
	}
	// The status handed out is a copy.
	st.LastReload.Result = "changed"
	if ps.get().LastReload.Result != "error" {
		t.Error("get returned shared state")
	}
	ps.reloaded("file change", t0.Add(2*time.Minute), nil)
	if st := ps.get(); st.LastReload.Result != "ok" || st.LastReload.Error != "" || gaugeValue(t, ps.lastOK) != 1 {
		t.Errorf("after a good reload: %+v", st.LastReload)
	}
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
