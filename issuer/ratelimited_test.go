package issuer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// TestRefusalAuditBounded: a window holds at most refusalMaxKeys addresses; the
// refusals of further addresses are counted together under client_addr "*", and
// IPv6 keys are written as their /64.
func TestRefusalAuditBounded(t *testing.T) {
	var out bytes.Buffer
	a := newRefusalAudit(slog.New(slog.NewJSONHandler(&out, nil)), time.Now)
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range refusalMaxKeys + 5 {
		b := base
		b[1], b[2], b[3] = byte(i>>16), byte(i>>8), byte(i)
		a.add(limitedPerIP, netip.AddrFrom4(b))
	}
	a.add(limitedInFlight, netip.MustParseAddr("2001:db8:1:2::"))
	a.add(limitedOverload, netip.MustParseAddr("10.0.0.0")) // the window is full: overflow
	a.add(limitedPerIP, netip.MustParseAddr("10.0.0.0"))    // already tracked: counted
	a.flush()
	var events, overflow int
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		events++
		switch ev["client_addr"] {
		case "*":
			overflow += int(ev["count"].(float64))
		case "10.0.0.0":
			if ev["count"] != 2.0 || ev["reason"] != limitedPerIP {
				t.Fatalf("10.0.0.0: %v", ev)
			}
		case "2001:db8:1:2::/64":
			t.Fatalf("an address beyond the bound was tracked: %v", ev)
		}
	}
	// One overflow event per reason: per_ip, in_flight, overload.
	if events != refusalMaxKeys+3 || overflow != 7 {
		t.Fatalf("%d events, %d refusals under *, want %d and 7", events, overflow, refusalMaxKeys+3)
	}
	if v := clientAddrAttr(netip.MustParseAddr("2001:db8:1:2::"), true).Value.String(); v != "2001:db8:1:2::/64" {
		t.Fatalf("IPv6 key written as %q", v)
	}
	out.Reset()
	a.flush()
	if out.Len() != 0 {
		t.Fatalf("an empty window wrote %q", out.String())
	}
}

// BenchmarkRefusalAudit is what auditing adds to each refused request of a flood
// (the client's address, one count), from 1024 addresses in parallel.
func BenchmarkRefusalAudit(b *testing.B) {
	l := newTokenLimits(Limits{}, nil, newMetrics())
	l.refusals = newRefusalAudit(slog.New(slog.DiscardHandler), time.Now)
	benchPeers(b, 1024, func(_ http.ResponseWriter, r *http.Request) { l.refused(limitedPerIP, r) })
}
