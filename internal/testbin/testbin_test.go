package testbin

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeInstall is an install script: it counts its runs in $RUNS, fails when
// $FAIL is set, answers --cached from what it built, and otherwise builds two
// executables into $OUT and prints that directory last, as the real scripts do.
const fakeInstall = `#!/usr/bin/env bash
set -eu
echo "run${1:+ $1}" >>"$RUNS"
built() { [ -x "$OUT/one" ] && [ -x "$OUT/two" ]; }
if [ "${1:-}" = --cached ]; then
  if built; then echo "$OUT"; exit 0; fi
  echo "nothing built in $OUT" >&2; exit 1
fi
echo "fake-install: building" >&2
if [ -n "${FAIL:-}" ]; then echo "fake-install: FAILED: $FAIL" >&2; exit 1; fi
mkdir -p "$OUT"
for b in one two; do printf '#!/bin/sh\n' >"$OUT/$b"; chmod +x "$OUT/$b"; done
echo "some progress on stdout"
echo "$OUT"
`

// fakeModule makes a module root holding scripts/fake-install.sh the working
// directory (a package directory below it, as under go test) and returns the
// Set, the directory the script builds into and the file counting its runs.
func fakeModule(t *testing.T, ciCached bool) (s *Set, out, runs string) {
	root := t.TempDir()
	for name, data := range map[string]string{"go.mod": "module fake\n", "scripts/fake-install.sh": fakeInstall} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pkg := filepath.Join(root, "internal", "pkg")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkg)
	out, runs = filepath.Join(root, "cache", "v1"), filepath.Join(root, "runs")
	t.Setenv("OUT", out)
	t.Setenv("RUNS", runs)
	t.Setenv("FAIL", "")
	t.Setenv("TESTBIN_FAKE_DIR", "")
	return &Set{Harness: "testfake", What: "Fake", Names: []string{"one", "two"}, EnvDir: "TESTBIN_FAKE_DIR",
		Script: "scripts/fake-install.sh", Timeout: time.Minute, CICached: ciCached}, out, runs
}

func runsOf(t *testing.T, runs string) []string {
	data, err := os.ReadFile(runs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func paths(t *testing.T, s *Set) ([]string, Outcome) {
	var got []string
	o := Try(t, func(tb testing.TB) { got = s.Paths(tb) })
	return got, o
}

// TestPathsFromEnvDir: a directory named by EnvDir is used as it is, without
// running the script; one lacking an executable fails the test (a skip would
// hide a wrong setting).
func TestPathsFromEnvDir(t *testing.T) {
	s, _, runs := fakeModule(t, false)
	dir := t.TempDir()
	for _, b := range []string{"one", "two"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TESTBIN_FAKE_DIR", dir)
	got, o := paths(t, s)
	if o.Msg != "" || len(got) != 2 || got[0] != filepath.Join(dir, "one") || got[1] != filepath.Join(dir, "two") {
		t.Fatalf("paths %q (%+v)", got, o)
	}
	if err := os.Chmod(filepath.Join(dir, "two"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, o = paths(t, s)
	if o.Skipped || !strings.HasPrefix(o.Msg, "testfake: TESTBIN_FAKE_DIR=") || !strings.Contains(o.Msg, "two is not an executable file") {
		t.Fatalf("non-executable in EnvDir: %+v", o)
	}
	if r := runsOf(t, runs); r != nil {
		t.Fatalf("the script ran although EnvDir is set: %q", r)
	}
}

// TestPathsRunsScriptOnce: without EnvDir the script builds and its last line
// names the directory; later calls reuse the outcome without running it again.
func TestPathsRunsScriptOnce(t *testing.T) {
	for _, ci := range []string{"", "true"} { // CI=true builds too unless CICached
		t.Run("CI="+ci, func(t *testing.T) {
			s, out, runs := fakeModule(t, false)
			t.Setenv("CI", ci)
			for range 2 {
				got, o := paths(t, s)
				if o.Msg != "" || len(got) != 2 || got[0] != filepath.Join(out, "one") || got[1] != filepath.Join(out, "two") {
					t.Fatalf("paths %q (%+v)", got, o)
				}
			}
			if r := runsOf(t, runs); len(r) != 1 || r[0] != "run" {
				t.Fatalf("script runs %q, want one build", r)
			}
		})
	}
}

// TestPathsUnavailable: when the script fails the test is skipped, or failed when
// CI=true; the failure is remembered, not retried for every test.
func TestPathsUnavailable(t *testing.T) {
	for ci, wantSkip := range map[string]bool{"": true, "true": false} {
		t.Run("CI="+ci, func(t *testing.T) {
			s, _, runs := fakeModule(t, false)
			t.Setenv("CI", ci)
			t.Setenv("FAIL", "no compiler")
			for range 2 {
				_, o := paths(t, s)
				if o.Skipped != wantSkip || !strings.HasPrefix(o.Msg, "testfake: Fake binaries unavailable: scripts/fake-install.sh: exit status 1") ||
					!strings.Contains(o.Msg, "set TESTBIN_FAKE_DIR to a directory holding one and two") {
					t.Fatalf("outcome %+v, want skipped=%v", o, wantSkip)
				}
				if !wantSkip && !strings.Contains(o.Msg, "CI=true, so failing instead of skipping") {
					t.Fatalf("CI failure does not say why it is not a skip: %q", o.Msg)
				}
			}
			if r := runsOf(t, runs); len(r) != 1 {
				t.Fatalf("script runs %q, want one", r)
			}
		})
	}
}

// TestPathsCICached: with CICached and CI=true only `--cached` is asked: with
// nothing built the test fails naming make tools and nothing is built; a
// finished build is used.
func TestPathsCICached(t *testing.T) {
	s, out, runs := fakeModule(t, true)
	t.Setenv("CI", "true")
	_, o := paths(t, s)
	if o.Skipped || !strings.Contains(o.Msg, "TESTBIN_FAKE_DIR is unset and Fake is not built") || !strings.Contains(o.Msg, "make tools") ||
		!strings.Contains(o.Msg, "nothing built in") {
		t.Fatalf("CI without a build: %+v", o)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("something was built in CI: %v", err)
	}
	t.Setenv("CI", "")
	if got, o := paths(t, s); o.Msg != "" || len(got) != 2 {
		t.Fatalf("build outside CI: %q %+v", got, o)
	}
	t.Setenv("CI", "true")
	if got, o := paths(t, s); o.Msg != "" || len(got) != 2 || got[0] != filepath.Join(out, "one") {
		t.Fatalf("CI with a finished build: %q %+v", got, o)
	}
	if r := runsOf(t, runs); strings.Join(r, ",") != "run --cached,run,run --cached" {
		t.Fatalf("script runs %q", r)
	}
}

func TestUnavailableOutsideCI(t *testing.T) {
	t.Setenv("CI", "")
	o := Try(t, func(tb testing.TB) { Unavailable(tb, "testfake", "no unix sockets") })
	if !o.Skipped || o.Msg != "testfake: no unix sockets; skipping" {
		t.Fatalf("outcome %+v", o)
	}
}

func needGroups(t *testing.T) {
	if !ProcessGroups {
		t.Skip("no process groups on this OS")
	}
}

// alive reports whether pid is a process that has not exited (a zombie, exited
// and not yet reaped, counts as gone).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// TestProcStopsGroup: a started process writes to its log; Stop ends it with
// SIGTERM, well before the grace period, and the child it started too (the
// signal goes to the process group); Stop again does nothing.
func TestProcStopsGroup(t *testing.T) {
	p, child := startWithChild(t, "echo started; sleep 60 & echo $! >child.pid; wait")
	if got := p.LogTail(5); got != "started" {
		t.Fatalf("log tail %q", got)
	}
	began := time.Now()
	p.Stop()
	if took := time.Since(began); took >= StopGrace {
		t.Fatalf("Stop took %s: SIGTERM did not end the process", took)
	}
	gone(t, child, "the child of the stopped process")
	p.Stop()
}

// TestProcStopKills: a process ignoring SIGTERM is killed after StopGrace.
func TestProcStopKills(t *testing.T) {
	needGroups(t)
	dir := t.TempDir()
	p, err := Start("stubborn", "/bin/sh", dir, filepath.Join(dir, "log"), "-c", "trap '' TERM; echo ready; sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	if err := p.WaitHealthy(10*time.Second, func() error {
		if p.LogTail(1) != "ready" {
			return errors.New("not ready")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	p.Stop()
	if took := time.Since(began); took < StopGrace || took > StopGrace+5*time.Second {
		t.Fatalf("Stop took %s, want StopGrace (%s) and then SIGKILL", took, StopGrace)
	}
}

// TestProcWaitHealthy: WaitHealthy gives up when the process exits (with its
// exit status) or when its bound passes, naming the process.
func TestProcWaitHealthy(t *testing.T) {
	needGroups(t)
	dir := t.TempDir()
	never := func() error { return errors.New("no answer") }
	p, err := Start("crasher", "/bin/sh", dir, filepath.Join(dir, "crasher.log"), "-c", "echo boom; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	if err := p.WaitHealthy(time.Minute, never); err == nil || err.Error() != "crasher exited before becoming healthy: exit status 3" {
		t.Fatalf("exited process: %v", err)
	}
	if got := p.LogTail(5); got != "boom" {
		t.Fatalf("log tail %q", got)
	}
	q, err := Start("sleeper", "/bin/sh", dir, filepath.Join(dir, "sleeper.log"), "-c", "sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Stop)
	if err := q.WaitHealthy(300*time.Millisecond, never); err == nil || err.Error() != "sleeper not healthy after 300ms: no answer" {
		t.Fatalf("slow process: %v", err)
	}
	if got := q.LogTail(5); got != "[empty]" {
		t.Fatalf("empty log tail %q", got)
	}
}

// TestProcLogFile: Start empties the log; StartAppend keeps what it holds; a long
// log's tail says how many lines it leaves out.
func TestProcLogFile(t *testing.T) {
	needGroups(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	run := func(start func(name, bin, dir, logPath string, args ...string) (*Proc, error), line string) *Proc {
		p, err := start("echo", "/bin/sh", dir, log, "-c", "echo "+line)
		if err != nil {
			t.Fatal(err)
		}
		<-p.exited
		return p
	}
	run(Start, "first")
	run(StartAppend, "second")
	if got := run(StartAppend, "third").LogTail(2); got != "[... 1 earlier lines]\nsecond\nthird" {
		t.Fatalf("appended log tail %q", got)
	}
	if got := run(Start, "fourth").LogTail(2); got != "fourth" {
		t.Fatalf("restarted log tail %q", got)
	}
}

// waitFile waits for the process p to write a number to path and returns it.
func waitFile(t *testing.T, p *Proc, path string) int {
	t.Helper()
	var n int
	if err := p.WaitHealthy(10*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err == nil {
			n, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// gone waits (bounded) until pid has exited.
func gone(t *testing.T, pid int, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (%d) still runs", what, pid)
		}
	}
}

// startWithChild runs script with /bin/sh (stopped when t ends) and waits until
// it has written the pid of a child to child.pid in its working directory.
func startWithChild(t *testing.T, script string) (*Proc, int) {
	t.Helper()
	needGroups(t)
	dir := t.TempDir()
	p, err := Start("sh", "/bin/sh", dir, filepath.Join(dir, "sh.log"), "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p, waitFile(t, p, filepath.Join(dir, "child.pid"))
}

// TestProcKill: Kill ends the process group at once with SIGKILL, without the
// SIGTERM that would let the process shut down (its TERM trap never runs), and
// closes Exited; Kill and Stop afterwards do nothing.
func TestProcKill(t *testing.T) {
	p, child := startWithChild(t, "trap 'echo got TERM' TERM; sleep 60 & echo $! >child.pid; echo ready; wait")
	select {
	case <-p.Exited():
		t.Fatal("Exited is closed while the process runs")
	default:
	}
	began := time.Now()
	p.Kill()
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("Kill took %s", took)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited is not closed after Kill")
	}
	gone(t, child, "the child of the killed process")
	if got := p.LogTail(5); got != "ready" {
		t.Fatalf("log tail %q: the process was not killed outright", got)
	}
	p.Kill()
	p.Stop()
}

// TestProcSignal: Signal reaches the process alone, not the rest of its group,
// and reports os.ErrProcessDone once the process has exited.
func TestProcSignal(t *testing.T) {
	p, child := startWithChild(t, "trap 'echo got USR1' USR1; sleep 60 & echo $! >child.pid; while :; do sleep 0.05; done")
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitHealthy(5*time.Second, func() error {
		if got := p.LogTail(5); !strings.Contains(got, "got USR1") {
			return errors.New("log tail " + got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !alive(child) {
		t.Fatal("the signal reached the process's child too")
	}
	p.Stop()
	if err := p.Signal(syscall.SIGUSR1); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit: %v", err)
	}
}

// TestProcDiesWithParent: a child started by a test binary that is killed (as on
// a test timeout, when no cleanup runs) dies with it.
func TestProcDiesWithParent(t *testing.T) {
	if dir := os.Getenv("TESTBIN_DYING_PARENT"); dir != "" {
		// Run as the parent below: start a child and wait to be killed.
		if _, err := Start("sleeper", "/bin/sh", dir, filepath.Join(dir, "log"), "-c", "echo $$ >child.pid; exec sleep 60"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		t.Fatal("the parent was not killed")
	}
	if !DiesWithParent {
		t.Skip("children do not die with their parent on this OS")
	}
	dir := t.TempDir()
	t.Setenv("TESTBIN_DYING_PARENT", dir)
	parent, err := Start("parent", os.Args[0], dir, filepath.Join(dir, "parent.log"), "-test.run=^TestProcDiesWithParent$", "-test.count=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(parent.Stop)
	child := waitFile(t, parent, filepath.Join(dir, "child.pid"))
	t.Cleanup(func() {
		if alive(child) {
			_ = syscall.Kill(child, syscall.SIGKILL)
		}
	})
	if err := parent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-parent.Exited()
	gone(t, child, "the child of the killed test binary")
}

// TestPoll: Poll returns nil once check succeeds, check's last error when its
// bound passes, and ErrQuit, without calling check again, once quit is closed.
func TestPoll(t *testing.T) {
	calls := 0
	if err := Poll(time.Minute, time.Millisecond, nil, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
	}

	calls = 0
	began := time.Now()
	err := Poll(100*time.Millisecond, 10*time.Millisecond, nil, func() error {
		calls++
		return errors.New("no answer " + strconv.Itoa(calls))
	})
	if took := time.Since(began); err == nil || err.Error() != "no answer "+strconv.Itoa(calls) || took < 100*time.Millisecond || calls < 2 {
		t.Fatalf("Poll = %v after %d calls and %s, want the last error after 100ms", err, calls, took)
	}

	quit := make(chan struct{})
	calls = 0
	err = Poll(time.Minute, time.Millisecond, quit, func() error {
		if calls++; calls == 2 {
			close(quit)
		}
		return errors.New("no answer")
	})
	if !errors.Is(err, ErrQuit) || calls != 2 {
		t.Fatalf("Poll = %v after %d calls, want ErrQuit after 2", err, calls)
	}
}
