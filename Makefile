# Strait — build, test, lint. `make test` installs what it needs and is safe to re-run.
GO        ?= go
PKGS      := ./...
TEST_TIMEOUT ?= 15m

.PHONY: all build test lint deps proto clean bench-config bench bench-sync bench-governance fuzz

all: build

build:
	$(GO) build -o bin/strait ./cmd/strait

# deps: everything the tests need on a fresh machine (idempotent): Go modules, curl for
# deploy/local/up.sh, ZooKeeper and etcd (Debian's packages) for the registry tests, and a
# Nacos 2.3.2 server assembled from Maven Central for the Nacos registry tests.
deps:
	$(GO) mod download
	cd test/dubbogo/prog && $(GO) mod download
	@command -v curl >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq curl) >/dev/null; }
	@[ -e /usr/share/java/zookeeper.jar ] || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper) >/dev/null; }
	@command -v etcd >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >/dev/null; }
	@{ command -v java && command -v javac && command -v mvn; } >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven) >/dev/null; }
	@bash test/registries/nacos/start.sh --assemble
	@bash test/java/build.sh >/dev/null
	@{ command -v h2spec || ls "$$($(GO) env GOBIN)/h2spec" || ls "$$($(GO) env GOPATH | cut -d: -f1)/bin/h2spec"; } >/dev/null 2>&1 || $(GO) install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible

# The packages that run deploy/local/up.sh (on a port base chosen at run time), the Java
# and dubbo-go peers, and the latency comparisons of ./test/abuse and h2spec's timeouts
# start many processes or measure time: they run one at a time, after the others, so the
# 2-core machine's load does not decide their outcome.
PROCESS_TESTS := ./test/local ./test/dubbo ./test/dubbo/localmeta ./test/java ./test/dubbometa ./internal/dubbowire ./test/abuse ./test/h2spec
# RACE_TESTS run again under the race detector: the relay, and both gateways through the
# end-to-end suite.
RACE_TESTS := ./internal/relay ./test/e2e

test: deps lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v -e /test/local -e /test/dubbo -e /test/java -e /internal/dubbowire -e /test/abuse -e /test/h2spec)
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(PROCESS_TESTS)
	STRAIT_E2E_DATAPATH=http $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./test/e2e/
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(RACE_TESTS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# proto regenerates the Go code of proto/ (needs protoc and protoc-gen-go).
proto:
	$(GO) generate ./proto/...

clean:
	rm -rf bin

# bench-config: 10 gateways, 100 configuration changes; prints the time from a change
# accepted by the controlplane to every gateway running it (p50, p99).
bench-config:
	$(GO) run ./loadtest/benchconfig -gateways 10 -changes 100

# bench: direct vs the Strait, nginx and HAProxy two-hop chains (gRPC unary and bidi, Triple
# gRPC-mode and HTTP/1.1 JSON, HTTP/1.1; 1 KiB and 64 KiB), open loop at 1,000 calls/s and
# closed-loop maximum; installs nginx and haproxy if missing. About 10 minutes; QUICK=1 for
# a short run (under 3 minutes). Writes loadtest/results/latest.json, latest.svg and pprof
# profiles. GOVERN=1 configures ten non-limiting governance policies on each hop. Uses
# up.sh's fixed ports (on a shared machine: flock /tmp/strait-ports.lock).
bench:
	QUICK=$(QUICK) GOVERN=$(GOVERN) bash loadtest/bench.sh

# bench-governance: the cluster-wide rate limit at the issue's scale: two ingress instances
# share 2,000 calls/s under an offered 4,000/s, measured over 10 s, then one leaves (make
# test runs the same at 200/s); and the isolation test, whose p99 with and without the
# flood it logs. Runtime ports; about a minute.
bench-governance:
	STRAIT_GOV_RATE=2000 STRAIT_GOV_SECONDS=10 $(GO) test -count=1 -v -timeout 10m -run 'TestClusterWideRateAccuracy$$|TestIsolationFromFlood$$' ./test/e2e/

# bench-sync: catalog propagation over 100 changes (a provider registered in beta's
# registry → callable by alpha's consumer), then catalog scale: 10,000 services with
# 100,000 instances in beta's registry, exported by one pattern, synced to alpha, on
# deploy/local/up.sh's processes (each domain on its own etcd server; fixed ports: on a
# shared machine run it as `flock /tmp/strait-ports.lock make bench-sync`).
bench-sync:
	$(GO) run ./loadtest/benchsync -changes 100 -scale-services 10000 -scale-instances 100000 -scale-processes

# fuzz: the native Go fuzz targets, each for FUZZTIME (default 30s), one after another (go
# test -fuzz takes one target per package per run). A failing input is written to the
# package's testdata/fuzz/<target>/ and is a seed from then on (`make test` runs the seeds).
# FUZZMINIMIZETIME bounds the minimization of each new input (the default, 60s, would take
# most of a short run). A run whose only failure is "context deadline exceeded" with no
# input written is Go 1.26's coordinator race at the end of -fuzztime (golang/go#75804,
# fixed in Go 1.27), not a finding, and passes.
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 1000x
FUZZ = $(GO) test -run='^$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME)
define fuzz_run
	@echo "== $(2) $(1)"; out=$$($(FUZZ) -fuzz='^$(1)$$' $(2) 2>&1); rc=$$?; echo "$$out"; \
	if [ $$rc -ne 0 ]; then \
		if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
			echo "(spurious end-of-fuzztime deadline, golang/go#75804: not a finding)"; \
		else exit $$rc; fi; \
	fi
endef

fuzz:
	$(call fuzz_run,FuzzClassifyParts,./internal/proxy)
	$(call fuzz_run,FuzzDeadline,./internal/proxy)
	$(call fuzz_run,FuzzEncodeGRPCMessage,./internal/proxy)
	$(call fuzz_run,FuzzParse,./internal/config)
	$(call fuzz_run,FuzzLoadGateway,./internal/config)
	$(call fuzz_run,FuzzParse,./registry-sync/syncjob)
	$(call fuzz_run,FuzzParseURL,./registry-sync/dubbourl)
	$(call fuzz_run,FuzzURLRoundTrip,./registry-sync/dubbourl)
	$(call fuzz_run,FuzzInstances,./registry-sync/dubboapp)
	$(call fuzz_run,FuzzRenderRoundTrip,./registry-sync/dubboapp)
	$(call fuzz_run,FuzzMergeApps,./registry-sync/dubboapp)
	$(call fuzz_run,FuzzServeConn,./internal/relay)
