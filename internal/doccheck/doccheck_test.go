package doccheck

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testproc"
)

// documents are the files whose runnable blocks run, relative to the module root.
var documents = []string{"README.md", "docs/architecture.md", "docs/benchmarks.md", "docs/revocation-design.md",
	"docs/threat-model.md", "deploy/README.md"}

// block is one runnable code block.
type block struct {
	line       int    // 1-based line of the marker
	background string // text that says a background block is ready; "" for a foreground one
	script     string
}

var marker = regexp.MustCompile(`^<!-- runnable(?::\s*background\s+"([^"]+)")?\s*-->\s*$`)

// parse extracts the runnable blocks of a Markdown document.
func parse(doc string) ([]block, error) {
	lines := strings.Split(doc, "\n")
	var out []block
	for i := 0; i < len(lines); i++ {
		m := marker.FindStringSubmatch(lines[i])
		if m == nil {
			if strings.HasPrefix(strings.TrimSpace(lines[i]), "<!-- runnable") {
				return nil, fmt.Errorf("line %d: malformed marker %q", i+1, lines[i])
			}
			continue
		}
		b := block{line: i + 1, background: m[1]}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		var body []string
		switch {
		case j < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[j]), "```"):
			indent := lines[j][:len(lines[j])-len(strings.TrimLeft(lines[j], " "))]
			for j++; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
				body = append(body, strings.TrimPrefix(lines[j], indent))
			}
			if j == len(lines) {
				return nil, fmt.Errorf("line %d: unterminated fenced block", b.line)
			}
		case j < len(lines) && strings.HasPrefix(lines[j], "    "):
			for ; j < len(lines) && (strings.HasPrefix(lines[j], "    ") || strings.TrimSpace(lines[j]) == ""); j++ {
				body = append(body, strings.TrimPrefix(lines[j], "    "))
			}
		default:
			return nil, fmt.Errorf("line %d: a runnable marker not followed by a code block", b.line)
		}
		b.script = strings.TrimSpace(strings.Join(body, "\n"))
		if b.script == "" {
			return nil, fmt.Errorf("line %d: empty runnable block", b.line)
		}
		out = append(out, b)
		i = j
	}
	return out, nil
}

func TestParse(t *testing.T) {
	doc := "x\n<!-- runnable -->\n\n    echo a\n    echo b\n\ntext\n<!-- runnable: background \"up\" -->\n```sh\nserve\n```\n"
	bs, err := parse(doc)
	if err != nil || len(bs) != 2 || bs[0].script != "echo a\necho b" || bs[1].script != "serve" || bs[1].background != "up" || bs[0].line != 2 {
		t.Fatalf("parse = %+v, %v", bs, err)
	}
	// A marker quoted in text is no marker.
	if bs, err := parse("| `x` | blocks marked `<!-- runnable -->` run |\n"); err != nil || len(bs) != 0 {
		t.Fatalf("a quoted marker: %+v, %v", bs, err)
	}
	for _, bad := range []string{"<!-- runnable -->\ntext\n", "<!-- runnable: later -->\n    x\n", "<!-- runnable -->\n```sh\nx\n"} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

// moduleRoot is two levels up from this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return root
}

// scratch is a directory that stands for the module root: links to its entries.
func scratch(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.Name() == "sts-quickstart" {
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// lockDocs serializes the documentation runs of every checkout on this machine:
// the documents use fixed ports (the quickstart's 127.0.0.1:8443).
func lockDocs(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "safeconduct-doccheck.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Minute)
	for syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatal("another documentation run holds the lock for 15 minutes")
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() { f.Close() })
}

// TestDocumentedCommands runs every runnable block of the documents, in order,
// one scratch directory per document.
func TestDocumentedCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the documentation's commands (go run, the quickstart); not with -short")
	}
	root := moduleRoot(t)
	bin := t.TempDir()
	for _, name := range []string{"sts", "stsctl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), filepath.Join(root, "cmd", name)).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	lockDocs(t)
	total := 0
	for _, doc := range documents {
		data, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := parse(string(data))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		total += len(blocks)
		if len(blocks) == 0 {
			continue
		}
		t.Run(doc, func(t *testing.T) { runDocument(t, doc, blocks, scratch(t, root), bin) })
	}
	if total < 4 {
		t.Fatalf("only %d runnable blocks in the documents", total)
	}
}

func runDocument(t *testing.T, doc string, blocks []block, dir, bin string) {
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, b := range blocks {
		where := fmt.Sprintf("%s:%d", doc, b.line)
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", b.script)
		cmd.Dir, cmd.Env = dir, env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out := &testproc.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if b.background == "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				cancel()
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-ctx.Done():
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				err = <-done
			}
			cancel()
			if err != nil {
				t.Fatalf("%s: %v\n--- script\n%s\n--- output\n%s", where, err, b.script, out)
			}
			t.Logf("%s: ok (%d lines of output)", where, lineCount(out.String()))
			continue
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		})
		deadline := time.Now().Add(5 * time.Minute)
		for !strings.Contains(out.String(), b.background) {
			select {
			case err := <-exited:
				t.Fatalf("%s: background block exited (%v) before %q\n--- script\n%s\n--- output\n%s", where, err, b.background, b.script, out)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %q within 5 minutes\n--- output\n%s", where, b.background, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: running in the background", where)
	}
}

func lineCount(s string) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader([]byte(s)))
	for sc.Scan() {
		n++
	}
	return n
}
