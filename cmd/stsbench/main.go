package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The quickstart's demo upstream and grant (cmd/sts/quickstart.go).
const (
	quickstartSTS      = "https://127.0.0.1:8443"
	quickstartIssuer   = "https://demo-upstream.safeconduct.invalid"
	quickstartKeyFile  = "demo-upstream-key.pem"
	quickstartCAFile   = "ca.crt"
	defaultAudience    = "https://api.demo.internal"
	defaultScope       = "api.read"
	defaultSubjectPref = "system:serviceaccount:demo:bench-"
)

// Bounds that keep a run finite and the subject tokens (valid 1h) valid throughout.
const (
	maxTokens      = 100_000
	maxConcurrency = 1024
	maxHTTP2Conns  = 256 // --http2
	maxDuration    = 30 * time.Minute
	maxRate        = 1_000_000 // arrivals per second (--rate)
	maxOutstanding = 100_000   // --max-outstanding
	maxWarmup      = 5 * time.Minute
	requestTimeout = 10 * time.Second
	// failFast: stop when this many requests have failed before any valid answer
	// (an admitted or a limited one).
	failFast = 20
	// openConcurrency is the default connection pool of the open loop: more than
	// the STS's default in-flight bound on 2 cores (64 x GOMAXPROCS), so that an
	// overload reaches the server's limit before the client's.
	openConcurrency = 256
)

const usageLine = "usage: stsbench (--sts URL --upstream-key PEM --upstream-issuer URL | --quickstart DIR) [--rate N] [flags]"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// options are the parsed command line.
type options struct {
	sts, cacert                                string
	keyFile, issuer, kid, upAudience, subjPref string
	audience, scope                            string
	tokens, concurrency                        int
	http2Conns                                 int
	duration, warmup                           time.Duration
	maxRequests                                int64
	pid                                        int
	allowRemote, json                          bool
	// Open loop (rate > 0): arrivals per second, their process and the bound on
	// requests sent or waiting for a connection.
	rate           float64
	arrivals       arrivalKind
	maxOutstanding int
}

func run(args []string, stdout, stderr io.Writer) int {
	o, code := parseFlags(args, stderr)
	if code >= 0 {
		return code
	}
	target, err := checkTarget(o.sts, o.allowRemote)
	if err != nil {
		fmt.Fprintln(stderr, "stsbench:", err)
		return 2
	}
	tokenURL := strings.TrimSuffix(target.String(), "/") + "/token"

	key, err := loadKey(o.keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "stsbench: --upstream-key:", err)
		return 1
	}
	if o.kid == "" {
		o.kid = thumbprint(key)
	}
	var server *procCPU
	if o.pid != 0 {
		if server, err = newProcCPU(o.pid); err != nil {
			fmt.Fprintln(stderr, "stsbench: --pid:", err)
			return 1
		}
	}
	bodies, err := mintBodies(key, o, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "stsbench: minting subject tokens:", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(tokenURL, o, bodies)
	if err != nil {
		fmt.Fprintln(stderr, "stsbench:", err)
		return 1
	}
	res, err := b.run(ctx, server)
	if err != nil {
		fmt.Fprintln(stderr, "stsbench:", err)
		return 1
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "stsbench:", err)
			return 1
		}
	} else {
		res.writeText(stdout)
	}
	switch {
	case res.Stopped == stopInterrupted:
		fmt.Fprintln(stderr, "stsbench: interrupted")
		return 1
	case res.OK == 0:
		fmt.Fprintln(stderr, "stsbench: no exchange succeeded")
		return 1
	case res.Errors > 0:
		fmt.Fprintf(stderr, "stsbench: %d requests failed\n", res.Errors)
		return 1
	}
	if res.Open != nil && res.Open.NotSent > 0 {
		// Not a failure of the STS, but the offered load fell short of --rate.
		fmt.Fprintf(stderr, "stsbench: warning: %d arrivals were not sent because %d requests were already outstanding "+
			"(the client was saturated; raise --concurrency / --max-outstanding or give stsbench more CPU)\n",
			res.Open.NotSent, res.Open.MaxOutstanding)
	}
	return 0
}

// parseFlags returns the options, or an exit code >= 0 when run should stop.
func parseFlags(args []string, stderr io.Writer) (*options, int) {
	o := &options{}
	fs := flag.NewFlagSet("stsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usageLine)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.sts, "sts", "", "STS base `URL`; requests go to URL/token (default with --quickstart: "+quickstartSTS+")")
	fs.StringVar(&o.cacert, "cacert", "", "PEM CA certificate `FILE` to trust for the STS (default: system roots)")
	fs.StringVar(&o.keyFile, "upstream-key", "", "`PEM` file with the private key (P-256 or RSA) of an upstream the STS trusts")
	fs.StringVar(&o.issuer, "upstream-issuer", "", "iss of the subject tokens: the upstream's issuer `URL`")
	fs.StringVar(&o.kid, "kid", "", "`KID`: the kid header of the subject tokens (default: RFC 7638 SHA-256 thumbprint of the key, base64url)")
	fs.StringVar(&o.upAudience, "upstream-audience", "sts", "`AUD`: the aud claim of the subject tokens")
	fs.StringVar(&o.subjPref, "subject-prefix", defaultSubjectPref, "sub of the subject tokens is `PREFIX` followed by a distinct number")
	fs.StringVar(&o.audience, "audience", defaultAudience, "audience requested from the STS")
	fs.StringVar(&o.scope, "scope", defaultScope, "scope requested from the STS (space-delimited; empty for none)")
	fs.IntVar(&o.tokens, "tokens", 1000, fmt.Sprintf("number of distinct subject tokens, used round robin (1..%d)", maxTokens))
	fs.IntVar(&o.concurrency, "concurrency", 8, fmt.Sprintf("closed loop: workers, each with its own keep-alive connection; "+
		"open loop: the connection pool, each connection carrying one request at a time (1..%d; default with --rate: %d)", maxConcurrency, openConcurrency))
	fs.IntVar(&o.http2Conns, "http2", 0, fmt.Sprintf("`N` > 0: the workers share N HTTP/2 connections (worker i uses connection i mod N, "+
		"its requests multiplexed as streams) instead of one HTTP/1.1 connection each (0..%d)", maxHTTP2Conns))
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured window; no request starts after it (at most "+maxDuration.String()+")")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unrecorded load before the measured window (at most "+maxWarmup.String()+")")
	fs.Int64Var(&o.maxRequests, "max-requests", 5_000_000, "at most this many requests in the measured window (and as many during warmup)")
	fs.IntVar(&o.pid, "pid", 0, "PID of the STS process: report its CPU time over the measured window (/proc/PID/stat)")
	quick := fs.String("quickstart", "", "`DIR` written by `sts quickstart`: use its upstream key, CA and demo issuer")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow a target that is not a loopback address")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object")
	fs.Float64Var(&o.rate, "rate", 0, fmt.Sprintf("open loop: offer `N` requests per second whatever the answers (0 < N <= %d); default: closed loop", maxRate))
	arrivals := fs.String("arrivals", string(arrivalsPoisson), "open loop: arrival process, poisson (exponential gaps) or uniform (evenly spaced)")
	fs.IntVar(&o.maxOutstanding, "max-outstanding", 0, fmt.Sprintf("open loop: at most `M` requests sent or waiting for a connection; "+
		"an arrival beyond them is not sent and counted as client-saturated (1..%d; default --concurrency)", maxOutstanding))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0
		}
		return nil, 2
	}
	usage := func(format string, a ...any) (*options, int) {
		fmt.Fprintf(stderr, "stsbench: "+format+"\n%s\n", append(a, usageLine)...)
		return nil, 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["rate"] {
		if !(o.rate > 0 && o.rate <= maxRate) { // also refuses NaN
			return usage("--rate must be in (0, %d]", maxRate)
		}
		o.arrivals = arrivalKind(*arrivals)
		if o.arrivals != arrivalsPoisson && o.arrivals != arrivalsUniform {
			return usage("--arrivals must be poisson or uniform")
		}
		if !set["concurrency"] {
			o.concurrency = openConcurrency
		}
		if !set["max-outstanding"] {
			o.maxOutstanding = o.concurrency
		}
		if o.maxOutstanding < 1 || o.maxOutstanding > maxOutstanding {
			return usage("--max-outstanding must be 1..%d", maxOutstanding)
		}
	} else if set["arrivals"] || set["max-outstanding"] {
		return usage("--arrivals and --max-outstanding need --rate (the open loop)")
	}
	if *quick != "" {
		if !set["sts"] {
			o.sts = quickstartSTS
		}
		if !set["upstream-key"] {
			o.keyFile = filepath.Join(*quick, quickstartKeyFile)
		}
		if !set["cacert"] {
			o.cacert = filepath.Join(*quick, quickstartCAFile)
		}
		if !set["upstream-issuer"] {
			o.issuer = quickstartIssuer
		}
	}
	switch {
	case o.sts == "":
		return usage("--sts is required (or --quickstart DIR)")
	case o.keyFile == "":
		return usage("--upstream-key is required (or --quickstart DIR)")
	case o.issuer == "":
		return usage("--upstream-issuer is required (or --quickstart DIR)")
	case o.upAudience == "":
		return usage("--upstream-audience must not be empty")
	case o.audience == "":
		return usage("--audience must not be empty")
	case o.tokens < 1 || o.tokens > maxTokens:
		return usage("--tokens must be 1..%d", maxTokens)
	case o.concurrency < 1 || o.concurrency > maxConcurrency:
		return usage("--concurrency must be 1..%d", maxConcurrency)
	case o.http2Conns < 0 || o.http2Conns > min(maxHTTP2Conns, o.concurrency):
		return usage("--http2 must be 0..%d and at most --concurrency", maxHTTP2Conns)
	case o.duration <= 0 || o.duration > maxDuration:
		return usage("--duration must be in (0, %s]", maxDuration)
	case o.warmup < 0 || o.warmup > maxWarmup:
		return usage("--warmup must be in [0, %s]", maxWarmup)
	case o.maxRequests < int64(o.concurrency):
		return usage("--max-requests must be at least --concurrency")
	case o.pid < 0:
		return usage("--pid must be positive")
	}
	if u, err := url.Parse(o.issuer); err != nil || u.Scheme == "" || u.Host == "" {
		return usage("--upstream-issuer must be an absolute URL")
	}
	return o, -1
}

// stopReason says why the measured window ended.
type stopReason string

const (
	stopDeadline    stopReason = "duration"
	stopMaxRequests stopReason = "max-requests"
	stopInterrupted stopReason = "interrupted"
)

// runMode is the load model.
type runMode string

const (
	// modeClosed: each worker sends its next request when the previous answer
	// arrived (the offered load adapts to the server).
	modeClosed runMode = "closed"
	// modeOpen: requests arrive at --rate whatever the answers (--rate).
	modeOpen runMode = "open"
)

// result is what a run measured; it is printed as text or as JSON.
type result struct {
	Mode        runMode    `json:"mode"`
	URL         string     `json:"url"`
	Concurrency int        `json:"concurrency"`                 // closed: workers; open: connection pool
	HTTP2Conns  int        `json:"http2_connections,omitempty"` // --http2: the workers' shared HTTP/2 connections
	Tokens      int        `json:"tokens"`
	WarmupS     float64    `json:"warmup_s"`
	DurationS   float64    `json:"duration_s"` // measured wall time, last response included
	Stopped     stopReason `json:"stopped"`
	// OK counts admitted exchanges: 200 with a valid token response.
	OK int `json:"ok"`
	// Limited counts well-formed refusals by a rate or concurrency limit: 429 with
	// Retry-After and a temporarily_unavailable JSON body. They are not errors.
	Limited    int            `json:"limited"`
	Errors     int            `json:"errors"`
	ErrorKinds map[string]int `json:"errors_by_kind"`
	Throughput float64        `json:"throughput_ok_per_s"`
	// LimitedRate is Limited per second of the window.
	LimitedRate float64 `json:"limited_per_s"`
	// Latency is of admitted exchanges, LatencyLimited of limited answers.
	Latency        latencyUS   `json:"latency_us"`
	LatencyLimited latencyUS   `json:"latency_limited_us"`
	Open           *openReport `json:"open_loop,omitempty"`
	// Server.PerRequestUS is the STS's CPU per admitted exchange (limited answers'
	// cost included); Generator.PerRequestUS is per answer of any class.
	Server    *cpuReport `json:"server_cpu,omitempty"`
	Generator cpuReport  `json:"generator_cpu"`
	GenProcs  int        `json:"generator_gomaxprocs"`
	NumCPU    int        `json:"num_cpu"`
}

// openReport is what only the open loop measures.
type openReport struct {
	Rate           float64     `json:"rate_per_s"` // --rate
	Arrivals       arrivalKind `json:"arrivals"`
	MaxOutstanding int         `json:"max_outstanding"`
	// Scheduled arrivals fell in the measured window; OfferedRate is Scheduled per
	// second of real time over which they were dispatched: close to Rate unless
	// the generator ran late (then SendDelay is large too).
	Scheduled   int     `json:"arrivals_scheduled"`
	OfferedRate float64 `json:"offered_per_s"`
	Sent        int     `json:"sent"`
	// NotSent arrivals found --max-outstanding requests outstanding: the client,
	// not the STS, was saturated, and the STS was offered less than Rate.
	NotSent int `json:"not_sent_client_saturated"`
	// SendDelay is from an arrival's scheduled time to its request being handed
	// to a connection: the generator's own lateness (and queueing for a connection
	// when --max-outstanding exceeds --concurrency). Latencies exclude it.
	SendDelay latencyUS `json:"send_delay_us"`
}

// latencyUS are latency percentiles, in microseconds.
type latencyUS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// cpuReport is a process's CPU time over the measured window.
type cpuReport struct {
	PID          int     `json:"pid,omitempty"`
	Name         string  `json:"name,omitempty"`
	Seconds      float64 `json:"seconds"`
	UtilPct      float64 `json:"util_pct"` // of one core; 200 = two cores busy
	PerRequestUS float64 `json:"per_request_us"`
}

func newCPUReport(cpu, wall time.Duration, requests int) cpuReport {
	r := cpuReport{Seconds: cpu.Seconds()}
	if wall > 0 {
		r.UtilPct = 100 * cpu.Seconds() / wall.Seconds()
	}
	if requests > 0 {
		r.PerRequestUS = float64(cpu.Microseconds()) / float64(requests)
	}
	return r
}

func (r *result) writeText(w io.Writer) {
	fmt.Fprintf(w, "target:      %s, %d connections, %d subject tokens, warmup %s\n",
		r.URL, r.Concurrency, r.Tokens, seconds(r.WarmupS))
	if o := r.Open; o != nil {
		fmt.Fprintf(w, "open loop:   %.0f/s offered (%s arrivals), at most %d outstanding\n", o.Rate, o.Arrivals, o.MaxOutstanding)
		fmt.Fprintf(w, "arrivals:    %d (%.0f/s), %d sent, %d not sent (client saturated)\n",
			o.Scheduled, o.OfferedRate, o.Sent, o.NotSent)
	} else {
		fmt.Fprintln(w, "closed loop: each connection sends its next request when the answer arrives")
	}
	fmt.Fprintf(w, "requests:    %d ok, %d limited (429), %d errors\n", r.OK, r.Limited, r.Errors)
	for _, k := range sortedKeys(r.ErrorKinds) {
		fmt.Fprintf(w, "  error:     %d × %s\n", r.ErrorKinds[k], k)
	}
	fmt.Fprintf(w, "duration:    %s (stopped by %s)\n", seconds(r.DurationS), r.Stopped)
	fmt.Fprintf(w, "throughput:  %.0f ok/s, %.0f limited/s\n", r.Throughput, r.LimitedRate)
	if r.OK > 0 {
		fmt.Fprintf(w, "latency ok:  %s\n", r.Latency)
	}
	if r.Limited > 0 {
		fmt.Fprintf(w, "latency 429: %s\n", r.LatencyLimited)
	}
	if o := r.Open; o != nil && o.Sent > 0 {
		fmt.Fprintf(w, "send delay:  %s\n", o.SendDelay)
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server cpu:  %.2f s (%.0f%% of a core), %.1f µs per ok exchange [pid %d, %s]\n",
			s.Seconds, s.UtilPct, s.PerRequestUS, s.PID, s.Name)
	}
	g := r.Generator
	fmt.Fprintf(w, "stsbench cpu: %.2f s (%.0f%% of a core), %.1f µs per request [GOMAXPROCS %d, %d CPUs]\n",
		g.Seconds, g.UtilPct, g.PerRequestUS, r.GenProcs, r.NumCPU)
}

func (l latencyUS) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s",
		micros(l.P50), micros(l.P90), micros(l.P99), micros(l.P999), micros(l.Max))
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func micros(us float64) string {
	d := time.Duration(us * float64(time.Microsecond))
	if d >= 10*time.Millisecond {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
