package testspire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

const (
	healthTimeout = 30 * time.Second
	cliTimeout    = 15 * time.Second
	checkTimeout  = 5 * time.Second // one healthcheck run
	pollInterval  = 100 * time.Millisecond
)

// runCLI runs a SPIRE command-line subcommand and returns its stdout; a failure
// carries stderr and stdout.
func runCLI(bin string, args ...string) ([]byte, error) {
	return runCLIWithin(cliTimeout, bin, args...)
}

// runCLIWithin is runCLI with a timeout of its own.
func runCLIWithin(timeout time.Duration, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return stdout.Bytes(), fmt.Errorf("%s %v: %w\nstderr: %s\nstdout: %s",
			bin, args, err, bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(stdout.Bytes()))
	}
	return stdout.Bytes(), nil
}
