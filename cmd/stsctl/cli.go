package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Environment variables that stand for flags not given on the command line.
const (
	EnvSTS    = "STSCTL_STS"    // --sts (and verify's --issuer)
	EnvCACert = "STSCTL_CACERT" // --cacert
	EnvToken  = "STSCTL_TOKEN"  // the admin --token (value, @FILE or -)
)

// usageError is a usage error with a message (errors.Is(err, errUsage)).
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// need checks that the required flags were given (flag name -> its value) and
// names the missing ones, and refuses positional arguments.
func need(fs *flag.FlagSet, flags ...string) error {
	var missing []string
	for _, name := range flags {
		if f := fs.Lookup(name); f != nil && f.Value.String() == "" {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		return usagef("%s: missing %s (see %s --help)", strings.TrimPrefix(fs.Name(), "stsctl "), strings.Join(missing, ", "), fs.Name())
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected arguments %q", strings.TrimPrefix(fs.Name(), "stsctl "), fs.Args())
	}
	return nil
}

// applyEnv gives the flags named (among sts, issuer, cacert, token) that were
// not set on the command line their environment variable's value, when set. An
// admin credential given another way (--cert, --token-file) keeps STSCTL_TOKEN
// out.
func applyEnv(fs *flag.FlagSet, names ...string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	envOf := map[string]string{"sts": EnvSTS, "issuer": EnvSTS, "cacert": EnvCACert, "token": EnvToken}
	for _, name := range names {
		env, ok := envOf[name]
		if !ok || set[name] || fs.Lookup(name) == nil {
			continue
		}
		if name == "token" && (set["cert"] || set["key"] || set["token-file"]) {
			continue
		}
		if v := os.Getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return usagef("%s: $%s: %v", strings.TrimPrefix(fs.Name(), "stsctl "), env, err)
			}
		}
	}
	return nil
}

// stsURL normalizes an --sts (or --issuer) value: a URL, or HOST:PORT (or HOST)
// for https://HOST:PORT. Anything else is a usage error naming the flag.
func stsURL(flagName, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if !strings.Contains(v, "://") {
		v = "https://" + v
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", usagef("--%s %q: want https://HOST[:PORT][/PATH] or HOST:PORT", flagName, v)
	}
	return strings.TrimSuffix(v, "/"), nil
}

// outputFlag is --output (-o): json (default) or table.
type outputFlag struct{ format string }

func (o *outputFlag) register(fs *flag.FlagSet) { o.registerWith(fs, "json") }

// registerWith registers --output (-o) with another default format.
func (o *outputFlag) registerWith(fs *flag.FlagSet, def string) {
	o.format = def
	for _, name := range []string{"output", "o"} {
		fs.Func(name, "output format: json or table (table shows times as UTC and relative to now)", func(v string) error {
			if v != "json" && v != "table" {
				return errors.New("want json or table")
			}
			o.format = v
			return nil
		})
	}
}

// print writes v as JSON or as a table. times names the fields holding times and
// their unit (seconds or milliseconds since the epoch), for the table.
func (o *outputFlag) print(w io.Writer, v any, times map[string]time.Duration) error {
	if o.format != "table" {
		return printJSON(w, v)
	}
	// Normalize through JSON, so structs and maps print alike.
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return printJSON(w, v)
	}
	if entries, ok := m["entries"].([]any); ok && len(m) == 1 {
		return entryTable(w, entries, time.Now())
	}
	return kvTable(w, m, times, time.Now())
}

// Time fields of the outputs, by unit.
var (
	claimTimes = map[string]time.Duration{"exp": time.Second, "iat": time.Second, "nbf": time.Second, "auth_time": time.Second}
	entryTimes = map[string]time.Duration{"created": time.Millisecond, "expires": time.Millisecond}
)

// kvTable prints an object as KEY VALUE lines in key order; nested values are
// compact JSON, times human.
func kvTable(w io.Writer, m map[string]any, times map[string]time.Duration, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(tw, "%s\t%s\n", k, cell(m[k], times[k], now))
	}
	return tw.Flush()
}

// entryTable prints revocation entries, one a line.
func entryTable(w io.Writer, entries []any, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSELECTOR\tREASON\tACTOR\tCREATED\tEXPIRES\tLIFTED")
	for _, e := range entries {
		m, _ := e.(map[string]any)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			cell(m["id"], 0, now), cell(m["kind"], 0, now), cell(m["selector"], 0, now), cell(m["reason"], 0, now),
			cell(m["actor"], 0, now), cell(m["created"], time.Millisecond, now), cell(m["expires"], time.Millisecond, now),
			cell(m["lifted"], 0, now))
	}
	return tw.Flush()
}

// cell renders one value for a table: a time (unit > 0) as UTC RFC 3339 and
// relative to now, strings as they are (control characters escaped), other
// values as compact JSON.
func cell(v any, unit time.Duration, now time.Time) string {
	if n, ok := v.(float64); ok && unit > 0 {
		if n == 0 {
			return "never"
		}
		return humanTime(time.Unix(0, int64(n)*int64(unit)), now)
	}
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return "-"
		}
		q := strconv.Quote(v)
		if q[1:len(q)-1] != v || strings.ContainsAny(v, "\t") {
			return q // control characters would break the table (or the terminal)
		}
		return v
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// humanTime is t as UTC RFC 3339 with how far it is from now ("in 4m59s",
// "2h0m0s ago").
func humanTime(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "now"
	switch {
	case d > 0:
		rel = "in " + d.String()
	case d < 0:
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}

// version is the stsctl build's module version and VCS revision.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "stsctl (unknown version)"
	}
	v := "stsctl " + bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v + " " + bi.GoVersion
}
