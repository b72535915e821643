# licgate — the two commands of the quick start are `make demo` and `make test`.
# Both install missing system packages first (apt-get), then build.

SHELL := /bin/bash
CARGO ?= cargo
RELEASE_BIN := target/release/licgate
DEMO_ARGS ?=

.PHONY: all deps test-deps build release demo test bench load load-authority load-heartbeats load-quick slow-headers fuzz fmt fmt-check clippy clean

all: build

## deps: install missing system packages (cmake, pkg-config, C toolchain, rustfmt, clippy)
deps:
	@./scripts/install-deps.sh

## build: debug build
build: deps
	$(CARGO) build

## release: optimized build (target/release/licgate)
release: deps
	$(CARGO) build --release

## demo: the demo app with the gateway in front of it (http://127.0.0.1:8080/)
demo: release
	$(RELEASE_BIN) demo $(DEMO_ARGS)

## test-deps: what the tests need beyond the build (headless Chromium, redis-server,
## PostgreSQL, Prometheus and promtool, Python with the end-to-end tests' virtualenv: Django,
## werkzeug, deploy/ checkers)
test-deps:
	@./scripts/install-deps.sh --browser --python --systemd --prometheus --postgres redis-server
	@./scripts/e2e-venv.sh

## test: formatting, lints, and every test (unit + integration against real sockets)
test: deps test-deps fmt-check clippy
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace --all-targets --no-fail-fast 2>&1 | tee target/test-output.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test-output.log

## bench: criterion benchmarks of the decision path (not part of `make test`)
bench: deps
	$(CARGO) bench --bench decide --bench scale --bench verify --bench usage --bench odoo --bench seats

## load: licgate vs a bare pingora proxy, nginx and nginx + auth_request (load/results/)
load: release
	@./scripts/install-deps.sh wrk nginx python3
	$(CARGO) build --release --example bare_proxy
	./load/run $(LOAD_ARGS)

## slow-headers: a slow-header attack (3,000 connections) with normal clients measured
slow-headers: release
	@./scripts/install-deps.sh wrk nginx python3 curl
	./load/slow-headers $(SLOW_ARGS)

## fuzz: each libFuzzer target (fuzz/, licgate::fuzzing) for FUZZ_SECONDS (stable
## toolchain: cargo-fuzz without a sanitizer; a panic is a finding). New inputs go to
## fuzz/target/corpus/; make test replays fuzz/corpus/ (the seeds) on every run.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := path host token config activation_form request_head usage_report admin_session odoo_rpc odoo_xmlrpc odoo_request authority_input authority_config
fuzz: deps
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/corpus/$$t && \
	  $(CARGO) fuzz run -O -s none $$t target/corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

## load-authority: the license authority on SQLite and PostgreSQL: heartbeats and
## activations per second at 50 clients with 100,000 licenses (load/results/authority-*)
load-authority: deps
	./load/authority $(LOAD_ARGS)

## load-heartbeats: a gateway with 10,000 tenants activated at a license server: CPU
## per heartbeat, revocation to refusal (load/results/heartbeats-*)
load-heartbeats: deps
	./load/heartbeats $(LOAD_ARGS)

## load-quick: the same in under two minutes
load-quick: LOAD_ARGS += --quick
load-quick: load

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
