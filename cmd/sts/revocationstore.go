package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/safeconduct/safeconduct/config"
)

// cmdRevocationStore is `sts revocation-store accept-loss --config FILE`.
func cmdRevocationStore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(stdout, "usage: sts revocation-store accept-loss --config FILE")
		return 0
	}
	if len(args) == 0 || args[0] != "accept-loss" {
		fmt.Fprintln(stderr, "usage: sts revocation-store accept-loss --config FILE")
		return 2
	}
	cfg, _, code := loadConfig("revocation-store accept-loss", args[1:], stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := config.AcceptStoreLoss(ctx, cfg, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "revocation store loss accepted: new identity %s; a running STS serves again within 5 s, from what the store holds now\n", id.ID)
	return 0
}
