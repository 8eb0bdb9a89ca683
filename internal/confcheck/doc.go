// Package confcheck reports what is wrong with a YAML configuration file in one
// style, whichever file it is (the server's sts.yaml, policy files): every problem at
// once, each located by file, line and key path, one per line:
//
//	sts.yaml:2: lsiten: unknown key (did you mean "listen"?)
//	sts.yaml:5: tokens.default_ttl: "5 minutes" is not a duration (write e.g. 10m or 1h30m)
//	sts.yaml:19: upstreams[1].bundle_endpoint.refresh_interval: "soon" is not a duration (write e.g. 10m or 1h30m)
//
// It owns the Problem type and its formatting (Format, Sort, Merge), key paths
// (Key, Index, StripKey), go-yaml syntax errors (Syntax), "did you mean"
// suggestions for unknown keys (UnknownKey, Suggest), and Decode, which decodes a
// *yaml.Node tree into a struct field by field: unknown keys and values of the
// wrong type become problems with their line and path, and decoding goes on past
// them, so a file's other problems are reported too.
package confcheck
