// Package testotlp is a real OTLP/HTTP trace receiver for tests: an httptest server
// on 127.0.0.1 that accepts POST /v1/traces, decodes the protobuf
// ExportTraceServiceRequest as a collector does, and keeps the spans, the raw
// request bodies and the request headers for assertions.
//
//	rcv := testotlp.NewTLS(t)
//	// tracing: {otlp_endpoint: rcv.URL, ca_file: rcv.WriteCA(t, dir)}
//	// ... requests, then flush the exporter ...
//	for _, sp := range rcv.Spans() {
//		fmt.Println(sp.GetName(), sp.Attr("http.route"))
//	}
package testotlp
