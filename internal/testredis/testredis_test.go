package testredis

import (
	"strings"
	"testing"
	"time"
)

func TestStartAnswersPing(t *testing.T) {
	addr := Start(t)
	if shared, _ := isSharedDefault(addr); shared {
		t.Fatalf("Start returned the shared default Redis %s", addr)
	}
	if got, err := Do(addr, time.Second, "PING"); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v; want PONG", got, err)
	}
}

func TestStartProcessStop(t *testing.T) {
	addr, stop := StartProcess(t)
	if _, err := Do(addr, time.Second, "SET", "k", "v"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := Do(addr, time.Second, "GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	stop()
	stop() // idempotent
	if _, err := Do(addr, 200*time.Millisecond, "PING"); err == nil {
		t.Fatal("PING succeeded after stop")
	}
}

// TestServerGoneAfterTest: a server started for a test is killed when the test
// ends, without stop being called.
func TestServerGoneAfterTest(t *testing.T) {
	var addr string
	t.Run("user", func(t *testing.T) {
		addr, _ = StartProcess(t)
		if _, err := Do(addr, time.Second, "PING"); err != nil {
			t.Fatalf("PING: %v", err)
		}
	})
	if _, err := Do(addr, 200*time.Millisecond, "PING"); err == nil {
		t.Fatal("PING succeeded after the test that started the server ended")
	}
}

func TestStartClusterOwnsAllSlots(t *testing.T) {
	addrs := StartCluster(t)
	info, err := Do(addrs[0], time.Second, "CLUSTER", "INFO")
	if err != nil {
		t.Fatalf("CLUSTER INFO: %v", err)
	}
	for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384"} {
		if !strings.Contains(info, want) {
			t.Errorf("CLUSTER INFO lacks %q:\n%s", want, info)
		}
	}
	// Keys in different slots cannot be read in one command: the server enforces
	// what the stores' hash tags are for.
	if _, err := Do(addrs[0], time.Second, "MGET", "{a}x", "{b}x"); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("MGET across slots: err = %v, want CROSSSLOT", err)
	}
}

func TestClosedAddrRefusesConnections(t *testing.T) {
	if _, err := Do(ClosedAddr(t), 200*time.Millisecond, "PING"); err == nil {
		t.Fatal("PING to ClosedAddr succeeded")
	}
}

func TestPrefixIsRandom(t *testing.T) {
	a, b := Prefix(t), Prefix(t)
	if a == b || len(a) != 17 || strings.ContainsAny(a, "{}:") {
		t.Fatalf("Prefix() = %q, %q", a, b)
	}
}

func TestIsSharedDefault(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:6379": true,
		"localhost:6379": true,
		"[::1]:6379":     true,
		":6379":          true,
		"0.0.0.0:6379":   true,
		"127.0.0.1:6380": false,
		"redis:6379":     false,
		"10.0.0.5:6379":  false,
	} {
		got, err := isSharedDefault(addr)
		if err != nil || got != want {
			t.Errorf("isSharedDefault(%q) = %v, %v; want %v", addr, got, err, want)
		}
	}
	if _, err := isSharedDefault("no-port"); err == nil {
		t.Error("isSharedDefault(no-port): want error")
	}
}
