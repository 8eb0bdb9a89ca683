# Developer commands. CI runs .ci/run, which calls the same steps.
.PHONY: test race lint fuzz bench tidy-check quickstart image ci tools

tools:           ## build the test prerequisites (SPIRE, staticcheck) with progress; prints what to export
	bash scripts/tools.sh

test:            ## the README's test command
	go test -race -count=1 -timeout 20m ./...

lint:
	gofmt -l $$(git ls-files '*.go') | (! grep .)
	go vet ./...
	go tool staticcheck ./...

fuzz:            ## every fuzz target for 30s
	bash scripts/fuzz.sh 30s

bench:           ## in-process hot-path benchmarks
	go test -run '^$$' -bench . -benchmem ./issuer ./attest/... ./policy ./revocation

tidy-check:
	go mod tidy && git diff --exit-code go.mod go.sum

quickstart:
	go run ./cmd/sts quickstart

image:           ## the container image without a daemon: OCI layout + SBOM in build/image
	go run ./cmd/imagebuild --out build/image/oci

ci:
	bash .ci/run
