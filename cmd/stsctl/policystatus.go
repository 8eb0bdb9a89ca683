package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/internal/stsclient"
	"github.com/safeconduct/safeconduct/issuer"
)

// errReloadFailed: the status was read, and the last reload failed.
var errReloadFailed = errors.New("the last policy reload failed: the live policy is an older one")

// cmdPolicyStatus prints the live policy of a running STS, from its operations
// listener (metrics_listen): digest, files, load time, and the last reload. It
// exits 1 when the last reload failed.
func cmdPolicyStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stsctl policy status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sts := fs.String("sts", "", "base URL of the STS's operations listener (metrics_listen), e.g. http://127.0.0.1:9090")
	cacert := fs.String("cacert", "", "CA of the listener's certificate, for an https URL")
	asJSON := fs.Bool("json", false, "print the status as JSON, as the server sends it (same as --output json)")
	var out outputFlag
	out.registerWith(fs, "table")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit of the request")
	if err := fs.Parse(args); err != nil {
		return parseErr(err)
	}
	if *sts == "" || fs.NArg() > 0 || (!strings.HasPrefix(*sts, "http://") && !strings.HasPrefix(*sts, "https://")) {
		fmt.Fprintln(stderr, "usage: stsctl policy status --sts http://HOST:PORT (the STS's metrics_listen) [--output json|table]")
		return errUsage
	}
	client, err := stsclient.HTTPClient(*cacert, *timeout)
	if err != nil {
		return err
	}
	url := strings.TrimRight(*sts, "/") + issuer.PathPolicyStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s (is --sts the STS's metrics_listen?)", url, resp.Status)
	}
	var st issuer.PolicyStatus
	if err := json.Unmarshal(body, &st); err != nil || st.LoadedAt.IsZero() {
		return fmt.Errorf("%s: not a policy status (is --sts the STS's metrics_listen?)", url)
	}
	if *asJSON || out.format == "json" {
		if _, err := stdout.Write(body); err != nil {
			return err
		}
	} else {
		writePolicyStatus(stdout, &st)
	}
	if st.LastReload != nil && st.LastReload.Result != "ok" {
		return errReloadFailed
	}
	return nil
}

func writePolicyStatus(w io.Writer, st *issuer.PolicyStatus) {
	digest := st.Digest
	if digest == "" {
		digest = "(unknown)"
	}
	fmt.Fprintf(w, "live policy:  %s\n", digest)
	fmt.Fprintf(w, "loaded at:    %s\n", st.LoadedAt.UTC().Format(time.RFC3339))
	for _, f := range st.Files {
		fmt.Fprintf(w, "  %s  %s\n", f.SHA256, f.Name)
	}
	r := st.LastReload
	if r == nil {
		fmt.Fprintln(w, "last reload:  none since start")
		return
	}
	fmt.Fprintf(w, "last reload:  %s at %s (%s)\n", r.Result, r.At.UTC().Format(time.RFC3339), r.Trigger)
	if r.Error != "" {
		fmt.Fprintln(w, "reload error (the live policy above stays in force):")
		for _, line := range strings.Split(strings.TrimRight(r.Error, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
}
