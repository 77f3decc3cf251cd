#!/usr/bin/env bash
# make bench-boot's nested row: inside one L1 (scripts/lib-nested.sh, real
# KVM one level down), Petrel and `qemu-system-x86_64 -enable-kvm -M pc`
# boot the same Debian kernel and the same busybox initramfs, whose /init
# prints a marker and powers off. For each: L1 wall time from process start
# to the marker (time to /init), KVM exits to that point (the sum of
# /sys/kernel/debug/kvm/exits before and after; one VM at a time), and for
# Petrel its RSS beyond guest RAM (-v). The L2 console is quiet: every
# serial byte is an exit, and nested exits are expensive.
# BENCH_NESTED_RUNS (default 2) boots each, the best run counts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-nested.sh
JOB=${BENCH_NESTED_DIR:-$PWD/out/bench-nested}
RUNS=${BENCH_NESTED_RUNS:-2}
rm -rf "$JOB"
mkdir -p "$JOB/in/l2root/bin" "$JOB/in/rootfs/usr/share"
nested_prepare

# The L2 initramfs: busybox and an /init that reports and powers off.
cp "$NESTED_BUSYBOX" "$JOB/in/l2root/bin/busybox"
cat >"$JOB/in/l2root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox echo "INIT-REACHED"
/bin/busybox poweroff -f
INIT
chmod +x "$JOB/in/l2root/init"
(cd "$JOB/in/l2root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$JOB/in/l2.cpio"
rm -rf "$JOB/in/l2root"
nested_copy_tool "$JOB/in/rootfs" qemu-system-x86_64
cp -a /usr/share/qemu /usr/share/seabios "$JOB/in/rootfs/usr/share/"

cat >"$JOB/in/job.sh" <<JOB
runs=$RUNS
JOB
cat >>"$JOB/in/job.sh" <<'JOB'
now() { cut -d' ' -f1 /proc/uptime; }
exits() { cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo 0; }
APPEND="console=ttyS0 quiet panic=-1"
# boot NAME CMD...: L1 seconds to the marker, and the exits, into $OUT/NAME.N
boot() {
  name=$1; shift
  i=0
  while [ $i -lt $runs ]; do
    i=$((i + 1))
    # The debugfs sum covers live VMs only: let the last one go first.
    sleep 3
    e0=$(exits); t0=$(now)
    "$@" </dev/null 2>$OUT/$name.$i.err | while IFS= read -r l; do
      case $l in *INIT-REACHED*) echo "$(now) $(exits)" >$OUT/$name.$i.mark ;; esac
      echo "$l" >>$OUT/$name.$i.log
    done
    if [ -f $OUT/$name.$i.mark ]; then
      read t1 e1 <$OUT/$name.$i.mark
      echo "$name $(awk "BEGIN{printf \"%.0f\", ($t1 - $t0) * 1000}") $((e1 - e0))" >>$OUT/results
      echo "$name run $i: /init after $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s, $((e1 - e0)) exits"
    else
      echo "$name run $i: /init not reached"; tail -5 $OUT/$name.$i.log $OUT/$name.$i.err
    fi
  done
}
boot petrel timeout 300 petrel run -v -m 256M -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "$APPEND" -serial stdio
grep -h "resident memory" $OUT/petrel.*.err | head -1
boot qemu timeout 300 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256M -nodefaults -nographic -no-reboot \
  -serial stdio -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "$APPEND"
JOB

nested_run "$JOB" "${BENCH_NESTED_TIMEOUT:-1500}" | grep -v '^job: ' || true
res=$JOB/out/results
[[ -s $res ]] || { echo "bench-nested: no results (console: $JOB/console.log)"; exit 1; }
best() { awk -v n="$1" -v col="$2" '$1 == n && (b == "" || $2 < b) {b = $2; e = $3} END {print (col == 2 ? b : e)}' "$res"; }
p_ms=$(best petrel 2); p_ex=$(best petrel 3); q_ms=$(best qemu 2); q_ex=$(best qemu 3)
rss=$(grep -ho 'VMM [0-9]* KiB beyond guest RAM' "$JOB"/out/petrel.*.err 2>/dev/null | awk '{print $2}' | sort -n | head -1)
ratio() { [[ -n $1 && -n $2 && $2 != 0 ]] && awk "BEGIN{printf \"%.2f\", $1 / $2}" || echo "-"; }
echo
echo "nested boot benchmark (inside L1: qemu TCG -cpu max, kvm-amd), $(basename "$NESTED_KERNEL"), 256 MiB, quiet console, best of $RUNS"
printf '%-10s %14s %8s %14s %8s %14s\n' vmm "to /init ms" "x qemu" "exits to /init" "x qemu" "RSS-RAM KiB"
printf '%-10s %14s %8s %14s %8s %14s\n' petrel "${p_ms:--}" "$(ratio "$p_ms" "$q_ms")" "${p_ex:--}" "$(ratio "$p_ex" "$q_ex")" "${rss:--}"
printf '%-10s %14s %8s %14s %8s %14s\n' qemu-kvm "${q_ms:--}" "1.00" "${q_ex:--}" "1.00" "-"
echo "(logs in $JOB/out/)"
