// Command stswatch reports runtime changes of workloads to the safeconduct STS
// admin API: SPIRE registration entries deleted or changed and agents evicted or
// banned, Kubernetes pods deleted or replaced and service accounts deleted. The STS
// then revokes the tokens it minted for them. See README "Watcher".
//
//	stswatch run --config stswatch.yaml
//	stswatch check-config --config stswatch.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/safeconduct/safeconduct/internal/confcheck"
	"github.com/safeconduct/safeconduct/internal/watch"
)

const usage = `usage: stswatch <command> [flags]

commands:
  run --config FILE            watch the configured sources and report to the STS
  check-config --config FILE   validate the configuration
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
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "check-config":
		cfg, code := loadConfig(args[1:], stderr)
		if cfg == nil {
			return code
		}
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	case "version":
		fmt.Fprintln(stdout, version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
	return 2
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "stswatch " + bi.Main.Version
	}
	return "stswatch (devel)"
}

func loadConfig(args []string, stderr io.Writer) (*watch.Config, int) {
	fs := flag.NewFlagSet("stswatch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "stswatch.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return nil, 2
	}
	cfg, err := watch.LoadConfig(*path)
	if ce := (*confcheck.Error)(nil); errors.As(err, &ce) {
		fmt.Fprintln(stderr, err) // one problem a line, each naming the file, as sts check-config prints them
		return nil, 1
	} else if err != nil {
		fmt.Fprintf(stderr, "stswatch: %v\n", err)
		return nil, 1
	}
	return cfg, 0
}

func logLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, code := loadConfig(args, stderr)
	if cfg == nil {
		return code
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel(cfg.LogLevel)}))
	if err := runWatcher(ctx, cfg, log); err != nil {
		log.Error("stswatch stopped", slog.String("error", err.Error()))
		return 1
	}
	return 0
}

// source is a running source.
type source interface {
	Run(ctx context.Context) error
	Ready() error
}

func runWatcher(ctx context.Context, cfg *watch.Config, log *slog.Logger) error {
	m := watch.NewMetrics()
	rep, err := watch.NewReporter(cfg, log, m)
	if err != nil {
		return err
	}
	health := watch.NewHealth(m)
	health.Add("sts", rep)
	sources := map[string]source{}
	if cfg.SPIRE != nil {
		s, err := watch.NewSPIRESource(cfg.SPIRE, cfg.StateDir, rep, m, log)
		if err != nil {
			return err
		}
		sources[watch.SourceSPIRE] = s
	}
	if cfg.Kubernetes != nil {
		s, err := newKubeSource(cfg, rep, m, log)
		if err != nil {
			return err
		}
		sources[watch.SourceKubernetes] = s
	}
	for name, s := range sources {
		health.Add(name, s)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var srv *http.Server
	if cfg.Listen != "" {
		l, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		srv = &http.Server{Handler: health.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("ops listener failed", slog.String("error", err.Error()))
			}
		}()
		log.Info("stswatch started", slog.String("sts", cfg.STS.URL), slog.String("listen", l.Addr().String()), slog.Int("sources", len(sources)))
	}
	var wg sync.WaitGroup
	wg.Go(func() { rep.Run(ctx) })
	errs := make(chan error, len(sources))
	for name, s := range sources {
		wg.Go(func() {
			if err := s.Run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	<-ctx.Done()
	if srv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if n := rep.Pending(); n > 0 {
		log.Warn("stopped with reports not delivered; the sources' persisted state predates them, so the next start reports them again", slog.Int("pending", n))
	}
	return nil
}
