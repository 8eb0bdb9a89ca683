package main

import (
	"os"
	"strings"
	"testing"
)

// TestE2EHealthcheck: `sts healthcheck` exits 0 while the STS is ready, on the
// operations listener and (without metrics_listen) on the TLS listener with the
// configured certificate, and 1 once it is gone.
func TestE2EHealthcheck(t *testing.T) {
	for _, ops := range []bool{true, false} {
		name := map[bool]string{true: "metrics_listen", false: "tls listener"}[ops]
		t.Run(name, func(t *testing.T) {
			e := setup(t, "")
			if !ops {
				cfg, err := os.ReadFile(e.cfg)
				if err != nil {
					t.Fatal(err)
				}
				e.write("sts.yaml", strings.Replace(string(cfg), "metrics_listen: "+e.ops+"\n", "", 1))
			}
			e.start()
			out := runBin(t, 0, "sts", "healthcheck", "--config", e.cfg)
			want := map[bool]string{true: "http://" + e.ops + "/readyz", false: "https://127.0.0.1:"}[ops]
			if !strings.Contains(out, "ready ("+want) {
				t.Fatalf("healthcheck:\n%s", out)
			}
			if err := e.stop(); err != nil {
				t.Fatal(err)
			}
			if out := runBin(t, 1, "sts", "healthcheck", "--config", e.cfg, "--timeout", "2s"); !strings.Contains(out, "not ready") {
				t.Fatalf("healthcheck of a stopped STS:\n%s", out)
			}
		})
	}
	// Another certificate than the configured one is not this STS.
	e := setup(t, "")
	cfg, _ := os.ReadFile(e.cfg)
	e.write("sts.yaml", strings.Replace(string(cfg), "metrics_listen: "+e.ops+"\n", "", 1))
	e.start()
	if err := ensureTLS(e.path("other-ca.crt"), e.path("other.crt"), e.path("other.key")); err != nil {
		t.Fatal(err)
	}
	cfg, _ = os.ReadFile(e.cfg)
	e.write("probe.yaml", strings.Replace(string(cfg), "cert_file: tls.crt", "cert_file: other.crt", 1))
	if out := runBin(t, 1, "sts", "healthcheck", "--config", e.path("probe.yaml")); !strings.Contains(out, "certificate") {
		t.Fatalf("healthcheck against another certificate:\n%s", out)
	}
	if out := runBin(t, 2, "sts", "healthcheck"); !strings.Contains(out, "usage") {
		t.Fatalf("no --config:\n%s", out)
	}
}
