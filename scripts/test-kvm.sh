#!/usr/bin/env bash
# The whole-VM Go tests on real KVM, part of make test.
#
# Tests that need /dev/kvm (testutil.NeedKVM) skip where it cannot be
# opened. Where this host's KVM has hardware virtualization, the plain
# `go test ./...` of scripts/test.sh already ran them, and this script only
# says so. Otherwise it runs them one level down (scripts/lib-nested.sh): the
# test binaries of every package with a NeedKVM test are built here (with
# their shared libraries, if any), the guest programs are prebuilt here (L1 has no gcc or
# binutils: PETREL_GUEST_DIR), static petrel goes in as PETREL_BIN, and
# qemu-img, qemu-io and qemu-system-x86_64 (with their libraries and
# firmware) go in as the peers some tests check against. The module's
# files are placed at this checkout's path inside L1, so testdata and the
# guest sources resolve as here. One L1 boot runs every package with -v;
# any failing test, or a test skipped for lack of KVM, fails the run.
#
# For development: TEST_KVM_PKGS="vmm tests" picks packages, TEST_KVM_RUN=REGEXP
# narrows the tests (-test.run), TEST_KVM_COUNT=N runs each N times
# (-test.count), NESTED_KVM_TRACE=1 brings back KVM's trace up to the first
# triple fault (scripts/lib-nested.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
source scripts/lib-nested.sh

if [[ ${TEST_KVM_FORCE_NESTED:-} != 1 ]] && nested_hw_kvm; then
  echo "test-kvm: the whole-VM tests already ran on this host's KVM in go test ./..."
  exit 0
fi

t0=$(date +%s)
JOB=${TEST_KVM_DIR:-$REPO/out/test-kvm}
rm -rf "$JOB"
mkdir -p "$JOB/in/bin" "$JOB/in/guests" "$JOB/in/src" "$JOB/in/rootfs"
nested_prepare

pkgs=${TEST_KVM_PKGS:-$(grep -rl --include='*_test.go' --exclude-dir=out --exclude-dir=bin 'testutil.NeedKVM(' . | xargs -n1 dirname | sed 's#^\./##' | sort -u)}
echo "test-kvm: building the test binaries of: $(echo $pkgs)"
# Built as go test ./... builds them (its cache serves most of the work);
# their shared libraries, if any, go in with them.
for p in $pkgs; do
  go test -c -o "$JOB/in/bin/${p//\//_}.test" "./$p"
done
nested_copy_libs "$JOB/in/rootfs" "$JOB"/in/bin/*.test
go run ./tests/guest/prebuild "$JOB/in/guests"
if [[ -d .git || -f .git ]]; then
  git ls-files -z | xargs -0 cp --parents -t "$JOB/in/src" 2>/dev/null || true
else
  tar -c --exclude=./out --exclude=./bin . | tar -x -C "$JOB/in/src"
fi
nested_copy_tool "$JOB/in/rootfs" qemu-img qemu-io qemu-system-x86_64
# machine/pc checks its ACPI tables with ACPICA here too (those tests need
# no KVM, but would otherwise skip inside L1).
for tool in iasl acpiexec; do
  if command -v $tool >/dev/null; then nested_copy_tool "$JOB/in/rootfs" $tool; fi
done
mkdir -p "$JOB/in/rootfs/usr/share"
cp -a /usr/share/qemu /usr/share/seabios "$JOB/in/rootfs/usr/share/"
qmods=/usr/lib/x86_64-linux-gnu/qemu # TCG is a module in Debian's QEMU
if [[ -f $qmods/accel-tcg-x86_64.so ]]; then
  mkdir -p "$JOB/in/rootfs$qmods"
  cp "$qmods/accel-tcg-x86_64.so" "$JOB/in/rootfs$qmods/"
  nested_copy_libs "$JOB/in/rootfs" "$qmods/accel-tcg-x86_64.so"
fi
echo "test-kvm: prepared in $(($(date +%s) - t0)) s"

# Known flaky on nested KVM, excluded loudly until fixed (TEST_KVM_EXCLUDE=
# runs everything; both still run in go test ./... on a host's own KVM):
# - TestHostileGuest's vCPU 0 is sometimes reset to the reset vector (rip
#   0xfff0, cs 0xf000) right after its legacy-port phase and then
#   triple-faults; it failed 1 of 2 quiet clean-clone runs. Suspected: a
#   garbage MSI or IOAPIC entry with INIT delivery mode reaching the BSP.
# - TestKickIsNeverLost: in all 4 whole-suite runs of one session the L1
#   fell silent inside it (console, and the test's own 90 s watchdog that
#   prints every goroutine: so L1 itself stopped, not the test). Run alone
#   (TEST_KVM_RUN) it passed 10 of 10 with the guest's countdown between
#   exits, 4 of 5 without. Suspected: a VM an earlier test left running
#   plus this test's exit storm starving L1 under TCG.
EXCLUDE=${TEST_KVM_EXCLUDE-'^(TestHostileGuest|TestKickIsNeverLost)$'}
[[ -z $EXCLUDE ]] || echo "test-kvm: KNOWN FLAKY, NOT RUN: $EXCLUDE (see scripts/test-kvm.sh)"
{
  echo "mkdir -p '$(dirname "$REPO")' && ln -sfn /job/src '$REPO'"
  # Every VM exit costs L1 a trip through TCG: hang bounds are 5 times longer.
  echo "export PETREL_GUEST_DIR=/job/guests PETREL_BIN=/bin/petrel PETREL_TEST_TIMEOUT_SCALE=5 CI='${CI:-}'"
  echo "repo='$REPO' run='${TEST_KVM_RUN:-.}' skip='$EXCLUDE' count='${TEST_KVM_COUNT:-1}' pkgs='$(echo $pkgs)'"
  cat <<'JOB'
fail=0
for p in $pkgs; do
  name=$(echo $p | tr / _)
  cd "$repo/$p"
  s=$(cut -d' ' -f1 /proc/uptime)
  # Every line to the log; test starts and results to the console as
  # they come, so a hang shows where.
  { /job/bin/$name.test -test.v -test.count=$count -test.timeout=$((15 * count))m -test.run "$run" -test.skip "$skip" 2>&1; echo $? >/tmp/rc; } |
    while IFS= read -r l; do
      echo "$l" >>$OUT/$name.log
      case $l in "=== RUN"* | *"--- "* | panic:*) echo "$p: $l" ;; esac
    done
  rc=$(cat /tmp/rc)
  echo "$p: rc=$rc pass=$(grep -c -- '--- PASS' $OUT/$name.log) fail=$(grep -c -- '--- FAIL' $OUT/$name.log) skip=$(grep -c -- '--- SKIP' $OUT/$name.log) ($s..$(cut -d' ' -f1 /proc/uptime) s of L1 uptime)"
  grep -- '--- FAIL' $OUT/$name.log
  [ $rc = 0 ] || fail=1
done
exit $fail
JOB
} >"$JOB/in/job.sh"

rc=0
# Every test prints as it starts and ends, and none runs 300 s here: an L1
# silent that long is wedged (seen: both TCG vCPUs spinning, the test
# binary's own timeouts never firing), and is booted again.
NESTED_IDLE_LIMIT=${NESTED_IDLE_LIMIT:-300} nested_run "$JOB" "${TEST_KVM_TIMEOUT:-1200}" || rc=$?

# The report: counts per package, every skip with its reason.
echo "test-kvm: results inside L1 (logs in $JOB/out):"
bad=0
for p in $pkgs; do
  log=$JOB/out/${p//\//_}.log
  if [[ ! -f $log ]]; then
    echo "  $p: no log"
    bad=1
    continue
  fi
  printf '  %-22s pass %3d  fail %3d  skip %3d\n' "$p" "$(grep -c -- '--- PASS' "$log" || true)" \
    "$(grep -c -- '--- FAIL' "$log" || true)" "$(grep -c -- '--- SKIP' "$log" || true)"
  grep -A1 -- '--- SKIP' "$log" | grep -v -- '^--$' | sed 's/^/      /' || true
  if grep -q 'cannot be opened.*this test needs KVM' "$log"; then
    echo "  $p: a test skipped for lack of KVM inside L1"
    bad=1
  fi
  if grep -q -- '--- FAIL\|^FAIL\|^panic:' "$log"; then
    # What each failing test logged: the lines since its === RUN.
    awk '/^=== RUN/ {buf = ""; next} {buf = buf "      " $0 "\n"} /--- FAIL|^panic:/ {printf "%s", buf; buf = ""}' "$log" | head -80
    bad=1
  fi
done
echo "test-kvm: took $(($(date +%s) - t0)) s in all"
if [[ $rc != 0 || $bad != 0 ]]; then
  echo "test-kvm: FAIL (nested run status $rc)"
  exit 1
fi
echo "test-kvm: ok"
