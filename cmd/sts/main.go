package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/issuer"
)

const usage = `usage: sts <command> [flags]

commands:
  serve --config FILE          run the STS
  check-config --config FILE   validate the configuration (and policy, keys, TLS files)
  quickstart [--dir DIR]       create a self-contained demo (self-signed TLS, a demo
                               upstream, a policy), start it and show one exchange
  revocation-store accept-loss --config FILE
                               acknowledge that the revocation store lost its data
                               (the STS refuses service until then)
  healthcheck --config FILE    exit 0 when the local STS's /readyz answers 200, else 1
                               (the container image's health check: no shell there)
  version                      print the version
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "serve":
		return cmdServe(ctx, args[1:], stderr)
	case "check-config":
		return cmdCheckConfig(ctx, args[1:], stdout, stderr)
	case "quickstart":
		return cmdQuickstart(ctx, args[1:], stdout, stderr)
	case "revocation-store":
		return cmdRevocationStore(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sts: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v += " " + s.Value
			}
		}
		return "sts " + v
	}
	return "sts (unknown version)"
}

// configFlag parses --config. It returns the path, or the exit code when the
// command cannot go on: 0 after --help, 2 for a usage error.
func configFlag(name string, args []string, stderr io.Writer) (string, int) {
	fs := flag.NewFlagSet("sts "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path of the configuration file (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", 0
		}
		return "", 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "usage: sts %s --config FILE\n", name)
		if *path == "" {
			fmt.Fprintf(stderr, "sts %s: missing --config\n", name)
		}
		return "", 2
	}
	return *path, -1
}

// loadConfig parses --config and loads the file; on failure it returns the exit
// code (0 after --help, 2 for usage, 1 for the file) after writing why to stderr.
func loadConfig(name string, args []string, stderr io.Writer) (*config.Config, string, int) {
	path, code := configFlag(name, args, stderr)
	if code >= 0 {
		return nil, "", code
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, "", 1
	}
	return cfg, path, 0
}

func cmdCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, path, code := loadConfig("check-config", args, stderr)
	if cfg == nil {
		return code
	}
	if err := config.Check(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range config.PolicyWarnings(cfg) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) int {
	path, code := configFlag("serve", args, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	redis.SetLogger(redisLogger{log})
	// Span export failures (collector down, refused credentials) go to the
	// structured log instead of bare stderr lines.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: export failed", slog.String("component", "otel"), slog.String("error", err.Error()))
	}))
	if os.Getenv("GOGC") == "" {
		// The live heap is small (a few MB: keys, policy, caches) and every exchange
		// allocates; collecting less often trades a few MB for CPU. GOGC overrides.
		debug.SetGCPercent(400)
	}
	if path := os.Getenv("SAFECONDUCT_CPUPROFILE"); path != "" {
		// For profiling under load: a CPU profile of the whole run, written at exit.
		stopProfile, err := startCPUProfile(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer stopProfile()
	}
	if err := serve(ctx, cfg, log, stderr, nil); err != nil {
		log.Error("sts stopped", slog.String("error", err.Error()))
		return 1
	}
	return 0
}

// serve runs the STS for cfg until ctx ends. ready, when not nil, is called once the
// listener is bound.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, auditW io.Writer, ready func()) error {
	// Without audit.path, audit events share stderr with the application log but
	// never its level (log.level: warn must not silence them), written through
	// the issuer's audit writer: a stderr nobody reads does not hang requests.
	//
	// The serving certificate is loaded first: a missing or bad TLS file stops the
	// start before Build creates anything (the key directory and its first key,
	// the embedded store, the audit file).
	tlsConfig, closeTLS, err := config.ServingTLS(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeTLS()
	opts := config.Options{Logger: log, AuditSink: auditW}
	s, err := config.Build(ctx, cfg, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	stopMetrics, err := serveMetrics(ctx, cfg, s, log)
	if err != nil {
		l.Close()
		return err
	}
	defer stopMetrics()
	go watchPolicy(ctx, cfg, s)
	log.Info("sts serving",
		slog.String("issuer", cfg.Issuer),
		slog.String("listen", l.Addr().String()),
		slog.Bool("tls", tlsConfig != nil),
		slog.String("kid", s.ActiveKeyID()),
		slog.String("alg", string(s.Algorithm())),
		slog.String("revocation", cfg.Revocation.Backend))
	if ready != nil {
		ready()
	}
	err = s.Serve(ctx, l, tlsConfig, 10*time.Second)
	log.Info("sts stopped serving")
	// Export the spans of the last requests; a collector that is down must not hold
	// up the exit.
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if terr := s.ShutdownTracing(fctx); terr != nil {
		log.Warn("tracing: spans not flushed at shutdown", slog.String("error", terr.Error()))
	}
	cancel()
	return err
}

// watchPolicy reloads the policy files when they change and on SIGHUP (which also
// rereads the signing keys); an invalid policy is logged and the last good one kept.
func watchPolicy(ctx context.Context, cfg *config.Config, s *issuer.Server) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				// SIGHUP also rereads key_dir at once (rotation without waiting).
				if err := s.ReloadKeys(); err != nil {
					slog.Default().Error("key reload failed; keeping the current keys", slog.String("error", err.Error()))
				}
				select {
				case reload <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	s.WatchPolicy(ctx, config.PolicySource(cfg), cfg.PolicyReloadInterval.D(), reload)
}

func newLogger(c config.LogConfig, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// redisLogger routes go-redis's internal messages (dial failures, pool events) into
// the structured log instead of bare stderr lines.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...), slog.String("component", "redis"))
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
