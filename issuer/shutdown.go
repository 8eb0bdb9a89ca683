package issuer

import (
	"context"
	"net"
	"net/http"
)

// shutdownKey is the context key of the context a server's shutdown cancels.
type shutdownKey struct{}

// endStreamsOnShutdown lets long-lived responses (the revocation feed's streams)
// end as soon as srv shuts down: Shutdown waits for every active request, and a
// stream that waits for its lifetime would hold the drain until its deadline. The
// requests' own contexts are left alone, so that in-flight exchanges still finish.
func endStreamsOnShutdown(srv *http.Server) {
	stopping, stop := context.WithCancel(context.Background())
	srv.RegisterOnShutdown(stop)
	base := srv.BaseContext
	srv.BaseContext = func(l net.Listener) context.Context {
		ctx := context.Background()
		if base != nil {
			ctx = base(l)
		}
		return context.WithValue(ctx, shutdownKey{}, stopping)
	}
}

// untilShutdown returns ctx, cancelled too when the server serving the request
// shuts down (endStreamsOnShutdown); call cancel when done.
func untilShutdown(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stopping, ok := ctx.Value(shutdownKey{}).(context.Context)
	if !ok {
		return ctx, cancel
	}
	unhook := context.AfterFunc(stopping, cancel)
	return ctx, func() { unhook(); cancel() }
}
