package issuer_test

import (
	"context"
	"math"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/issuer"
)

func TestServeObservesQueueAge(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	ts := startSTS(t, stsOptions{})
	minAge := ts.srv.StopOverloadTicks() // the observation stays until read here
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, l, ts.hs.TLS.Clone(), time.Second) }()
	defer func() {
		cancel()
		<-done
	}()
	if minAge.Load() != math.MaxInt64 {
		t.Fatal("an age was observed before any request")
	}
	resp, err := ts.client.PostForm("https://"+l.Addr().String()+issuer.PathToken, ts.form(ts.a.Token(t, payments)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if age := minAge.Load(); age == math.MaxInt64 || age < 0 || age > int64(5*time.Second) {
		t.Fatalf("queue age %d ns after a request over Serve, want an observation", age)
	}
}
