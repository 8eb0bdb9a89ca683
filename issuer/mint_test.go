package issuer_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func BenchmarkExchange(b *testing.B) {
	for _, up := range []string{"ES256", "RS256"} {
		b.Run("upstream-"+up, func(b *testing.B) {
			ts := startSTSForBench(b)
			claims := ts.a.Claims(payments)
			claims["exp"] = time.Now().Add(time.Hour).Unix()
			var subject string
			if up == "RS256" {
				subject = ts.a.SignRS256(b, claims)
			} else {
				subject = ts.a.Sign(b, claims)
			}
			body := ts.form(subject).Encode()
			h := ts.srv.Handler()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

func startSTSForBench(b *testing.B) *testSTS {
	ts := startSTS(b, stsOptions{})
	ts.srv.SetAuditLogger(slog.New(slog.NewJSONHandler(io.Discard, nil)))
	return ts
}
