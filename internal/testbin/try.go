package testbin

import (
	"fmt"
	"runtime"
	"testing"
)

// Outcome is how a function given to Try ended.
type Outcome struct {
	// Msg is the message of Fatal, Fatalf or Skip; empty when f returned.
	Msg string
	// Skipped: f called Skip.
	Skipped bool
}

// Try runs f, in a goroutine of its own, with a testing.TB whose Fatal, Fatalf and
// Skip record their message and end f, so that a test can check what a harness
// would have failed or skipped with instead of failing or skipping itself.
func Try(t testing.TB, f func(testing.TB)) Outcome {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.out
}

type recorder struct {
	testing.TB
	out Outcome
}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.out.Msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.out.Msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any) {
	r.out.Msg, r.out.Skipped = fmt.Sprint(args...), true
	runtime.Goexit()
}
func (r *recorder) Logf(string, ...any) {}
