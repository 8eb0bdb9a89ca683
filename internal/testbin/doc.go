// Package testbin is what the harnesses that run real third-party servers in
// tests have in common: finding the prebuilt binaries (internal/testspire,
// internal/testkube), and running them as child processes (those two and
// internal/testredis).
//
// A Set names the binaries, the environment variable of a directory holding them
// and the install script that otherwise builds them into a cache directory (the
// last line the script prints). When they cannot be had the test is skipped, or
// failed when CI=true, where a skip would hide that the tests never ran
// (Unavailable). With CICached, a CI run only asks the script for a finished
// build (`script --cached`) and never builds inside a test's time limit.
//
// A Proc is a child process with its output in a log file, in its own process
// group (Stop signals the group: SIGTERM, then SIGKILL after 5s; Kill sends
// SIGKILL at once, as a crash would end it) and, on Linux, killed when the test
// binary dies (Pdeathsig), so nothing outlives a test. Poll is the bounded
// polling loop of Proc.WaitHealthy, for other waits.
package testbin
