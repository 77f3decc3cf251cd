#!/usr/bin/env bash
# make iotests: QEMU's own qemu-iotests judge `petrel img`.
#
# 1. Fetches the QEMU source package matching the installed qemu-utils from
#    Debian (apt-get source, through a private deb-src list built from this
#    machine's apt sources; the system's package lists are not touched) and
#    keeps only tests/qemu-iotests and python/ under out/iotests/qemu.
# 2. For each format (IOTESTS_FORMATS, default "qcow2 qed") runs every test
#    with Debian's qemu-img: the tests that pass form the baseline. QEMU_PROG
#    is a stub that answers help/version queries only, so tests that need a
#    VM fail here and drop out of the baseline.
# 3. Runs the baseline again with QEMU_IMG_PROG = a `qemu-img` symlink to
#    bin/petrel (Debian's qemu-io, qemu-nbd and qemu-storage-daemon stay the
#    independent writers and checkers).
# 4. Fails when a baseline test fails with petrel and is not listed in
#    tests/iotests/expected-failures.txt, or when a listed test passes (so the
#    list stays true). Prints the pass counts per format.
#
# Nothing from QEMU's tree is committed: it all lives in out/iotests.
#
# .ci/run runs it after make test (not inside it: on the 2-core development
# machine the whole run, both formats and both passes, takes about 11
# minutes with 2 jobs when the machine is quiet, much longer under load;
# the fetch and unpack take about 30 s).
# IOTESTS_JOBS sets check's -j (default: number of CPUs); IOTESTS_TESTS
# limits the run to the named tests (for working on one).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=$repo/out/iotests
expected=$repo/tests/iotests/expected-failures.txt
formats=${IOTESTS_FORMATS:-qcow2 qed}
jobs=${IOTESTS_JOBS:-$(nproc)}


for tool in qemu-img qemu-io qemu-nbd qemu-storage-daemon python3 dpkg-source; do
  command -v "$tool" >/dev/null || { echo "iotests: $tool is missing (Debian packages qemu-utils, qemu-system-common, python3, dpkg-dev)" >&2; exit 1; }
done

# --- 1. the test suite, from the source package of the installed qemu-img ---
version=$(dpkg-query -W -f='${source:Version}' qemu-utils)
qemu=$root/qemu
if [ "$(cat "$qemu/.version" 2>/dev/null)" != "$version" ]; then
  echo "iotests: fetching qemu $version source from Debian"
  apt=$root/apt
  rm -rf "$apt" "$qemu" "$root/src"
  mkdir -p "$apt/lists/partial" "$apt/sources.list.d" "$apt/cache/archives/partial" "$root/src"
  # One-line sources: each "deb URI SUITE COMPONENTS" becomes "deb-src ...".
  : >"$apt/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -n 's/^[[:space:]]*deb[[:space:]]\+/deb-src /p' "$f" >>"$apt/sources.list"
  done
  # deb822 sources: the same stanzas with "Types: deb-src".
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt/sources.list.d/$(basename "$f")"
  done
  aptopts=(-o "Dir::Etc::sourcelist=$apt/sources.list"
    -o "Dir::Etc::sourceparts=$apt/sources.list.d"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
    -o "APT::Sandbox::User=root")
  apt-get -qq "${aptopts[@]}" update
  (cd "$root/src" && apt-get -qq "${aptopts[@]}" source --download-only "qemu=$version")
  # dpkg-source applies Debian's patches (the 7.2.x stable updates change
  # test outputs to match the installed binaries).
  (cd "$root/src" && dpkg-source -q -x qemu_*.dsc tree >/dev/null 2>&1)
  mkdir -p "$qemu/tests"
  mv "$root/src/tree/tests/qemu-iotests" "$qemu/tests/"
  mv "$root/src/tree/python" "$qemu/"
  rm -rf "$root/src"
  echo "$version" >"$qemu/.version"
fi

# --- the programs under test ---
bin=$root/bin
rm -rf "$bin"
mkdir -p "$bin/petrel"
ln -s "$repo/bin/petrel" "$bin/petrel/qemu-img"
real_qemu=$(command -v qemu-system-x86_64 || true)
cat >"$bin/qemu-stub" <<EOF
#!/bin/sh
# QEMU_PROG for iotests that must not start a VM: answers help and version
# queries (through the real binary when there is one), refuses the rest.
for a in "\$@"; do
  case "\$a" in
  help|*=help|-version|--version|-h|-help|--help)
    if [ -n "$real_qemu" ]; then exec "$real_qemu" "\$@"; fi
    case "\$a" in *version) echo "QEMU emulator version 7.2.0"; exit 0;; esac
    exit 0;;
  esac
done
echo "qemu-stub: this iotests run starts no VM" >&2
exit 1
EOF
chmod +x "$bin/qemu-stub"

# run NAME QEMU_IMG FORMAT TESTS...: one check run in its own directory
# (check keeps .out.bad files and scratch beside the link it was started
# through); prints the names of the tests that passed.
run() {
  local name=$1 img=$2 fmt=$3
  shift 3
  local dir=$root/run/$name-$fmt
  # A test killed mid-way (tests 308, 108 export images through FUSE) can
  # leave a mount in its scratch directory that rm cannot remove.
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts |
    while read -r m; do fusermount -uz "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf "$dir"
  mkdir -p "$dir"
  ln -s "$qemu/tests/qemu-iotests/check" "$dir/check"
  (cd "$qemu/tests/qemu-iotests" &&
    QEMU_PROG=$bin/qemu-stub QEMU_IMG_PROG=$img \
      QEMU_IO_PROG=$(command -v qemu-io) QEMU_NBD_PROG=$(command -v qemu-nbd) \
      QSD_PROG=$(command -v qemu-storage-daemon) \
      TEST_DIR=$dir/scratch SOCK_DIR=$dir/sock \
      nice -n 10 python3 "$dir/check" -tap -j "$jobs" "-$fmt" "$@" \
      >"$dir/tap" 2>"$dir/diff" || true)
  # Daemons a failed test did not stop (162 forks qemu-nbd and expects to
  # kill it itself) would outlive the run: their command lines name
  # files under the run's scratch directory.
  pkill -f -- "$dir/scratch/" 2>/dev/null || true
  sed -n "s/^ok $fmt \([^ ]*\)\$/\1/p" "$dir/tap" | sort
}

# Expected failures: "TEST FORMAT REASON..." (FORMAT may be "*").
listed() { # FORMAT -> tests listed for it
  sed -e 's/#.*//' "$expected" | awk -v f="$1" 'NF >= 3 && ($2 == f || $2 == "*") { print $1 }' | sort -u
}

start=$(date +%s)
status=0
summary=""
for fmt in $formats; do
  mapfile -t base < <(run qemu-img "$(command -v qemu-img)" "$fmt" ${IOTESTS_TESTS:-})
  if [ "${#base[@]}" -eq 0 ]; then
    echo "iotests: no test passed with qemu-img for $fmt (see $root/run/qemu-img-$fmt)" >&2
    status=1
    continue
  fi
  mapfile -t pass < <(run petrel "$bin/petrel/qemu-img" "$fmt" "${base[@]}")
  fails=$(comm -23 <(printf '%s\n' "${base[@]}") <(printf '%s\n' "${pass[@]}"))
  unexpected=$(comm -23 <(printf '%s\n' $fails | sed '/^$/d') <(listed "$fmt"))
  if [ -n "$unexpected" ]; then
    # Once more, alone: on a loaded machine a test can time out (several
    # wait for sockets or background jobs) with either qemu-img.
    echo "iotests: $fmt: running again with petrel img:" $unexpected >&2
    mapfile -t again < <(run petrel-again "$bin/petrel/qemu-img" "$fmt" $unexpected)
    if [ "${#again[@]}" -gt 0 ]; then
      echo "iotests: $fmt: passed the second time (flaky):" "${again[@]}" >&2
      mapfile -t pass < <(printf '%s\n' "${pass[@]}" "${again[@]}" | sort)
      unexpected=$(comm -23 <(printf '%s\n' $unexpected) <(printf '%s\n' "${again[@]}"))
    fi
  fi
  fixed=$(comm -12 <(printf '%s\n' "${pass[@]}") <(listed "$fmt"))
  n=${#base[@]}
  p=${#pass[@]}
  summary+="$(printf '%-6s qemu-img %3d  petrel %3d  (%d%%)' "$fmt" "$n" "$p" $((p * 100 / n)))"$'\n'
  if [ -n "$unexpected" ]; then
    echo "iotests: $fmt: fail with petrel img but pass with qemu-img:" $unexpected >&2
    echo "  diffs: $root/run/petrel-$fmt/diff" >&2
    status=1
  fi
  if [ -n "$fixed" ]; then
    echo "iotests: $fmt: listed as expected failures but pass now (remove them):" $fixed >&2
    status=1
  fi
done
echo "iotests: tests passing without a VM (baseline = Debian's qemu-img):"
printf '%s' "$summary"
echo "iotests: $(($(date +%s) - start))s"
exit $status
