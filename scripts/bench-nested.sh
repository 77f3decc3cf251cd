#!/usr/bin/env bash
# make bench-boot's nested row: inside one L1 (scripts/lib-nested.sh, real
# KVM one level down), Petrel and `qemu-system-x86_64 -enable-kvm -M pc`
# boot the same Debian kernel and the same busybox initramfs, whose /init
# prints a marker and powers off. For each: L1 wall time from process start
# to the marker (time to /init), KVM exits to that point (the sum of
# /sys/kernel/debug/kvm/exits before and after; one VM at a time), and
# each VMM's resident memory beyond guest RAM at /init (and, from -v,
# Petrel's at power-off). The L2 console is quiet: every serial byte is an
# exit, and nested exits are expensive.
# Then guest disk throughput: a second initramfs runs tools/diskbench on
# /dev/vda (virtio-blk on a fresh 256 MiB qcow2 in L1, cache=writeback for
# both: O_DIRECT 1 MiB sequential write and read over 64 MiB, 2000 random
# 4 KiB writes and reads, every read checked against what was written).
# Then the network: a third initramfs runs tools/netbench against a
# netbench server in L1, over user-mode networking (guest at 10.0.2.15 by
# DHCP, the server as 10.0.2.2; QEMU's slirp against Petrel's netstack)
# and over a tap in L1 (10.9.0.2 to 10.9.0.1; QEMU with vhost=off, as
# Petrel has no vhost): 64-byte request/response round trips (mean us),
# 64 MiB guest to L1 and 64 MiB L1 to guest, every byte checked.
# BENCH_NESTED_PARTS (default "boot disk net") picks the parts to run;
# BENCH_NESTED_RUNS (default 2) runs each, alternating, the best run counts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-nested.sh
source scripts/lib-l2.sh
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
# The disk benchmark's initramfs: busybox, the virtio-blk modules, diskbench.
mkdir -p "$JOB/in/l2disk/bin" "$JOB/in/l2disk/modules"
cp "$NESTED_BUSYBOX" "$JOB/in/l2disk/bin/busybox"
CGO_ENABLED=0 go build -o "$JOB/in/l2disk/bin/diskbench" ./tools/diskbench
# shellcheck disable=SC2086 # the lists are words
l2_modules "$JOB/in/l2disk/modules" $L2_BLK_MODS
mods=$(l2_module_names $L2_BLK_MODS)
cat >"$JOB/in/l2disk/init" <<INIT
#!/bin/busybox sh
B=/bin/busybox
\$B mkdir -p /proc /sys /dev
\$B mount -t proc proc /proc; \$B mount -t sysfs sys /sys; \$B mount -t devtmpfs dev /dev
for m in $mods; do \$B insmod /modules/\$m.ko || echo "DISKBENCH-FAILED insmod \$m"; done
n=0; while [ ! -b /dev/vda ] && [ \$n -lt 50 ]; do \$B sleep 0.1; n=\$((n + 1)); done
/bin/diskbench /dev/vda 64 2000 || echo "DISKBENCH-FAILED"
\$B poweroff -f
INIT
chmod +x "$JOB/in/l2disk/init"
(cd "$JOB/in/l2disk" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$JOB/in/l2disk.cpio"
rm -rf "$JOB/in/l2disk"
qemu-img create -q -f qcow2 "$JOB/in/disk.qcow2" 256M
# The network benchmark's initramfs: busybox, the virtio-net modules, netbench.
mkdir -p "$JOB/in/l2net/bin" "$JOB/in/l2net/modules"
cp "$NESTED_BUSYBOX" "$JOB/in/l2net/bin/busybox"
CGO_ENABLED=0 go build -o "$JOB/in/l2net/bin/netbench" ./tools/netbench
cp "$JOB/in/l2net/bin/netbench" "$JOB/in/netbench"
l2_modules "$JOB/in/l2net/modules" $L2_NET_MODS
netmods=$(l2_module_names $L2_NET_MODS)
cp "$NESTED_MODDIR/kernel/drivers/net/tun.ko" "$JOB/in/"
cat >"$JOB/in/l2net/init" <<INIT
#!/bin/busybox sh
B=/bin/busybox
\$B mkdir -p /proc /sys /dev /bin /tmp
\$B --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $netmods; do insmod /modules/\$m.ko || echo "NETBENCH-FAILED insmod \$m"; done
ip link set lo up; ip link set eth0 up
if grep -q petrelnet=tap /proc/cmdline; then
  ip addr add 10.9.0.2/24 dev eth0; server=10.9.0.1
else
  printf '#!/bin/sh\n[ "\$1" = bound ] && ip addr add \$ip/\${mask:-24} dev \$interface\nexit 0\n' >/tmp/dhcp.sh
  chmod +x /tmp/dhcp.sh
  udhcpc -i eth0 -s /tmp/dhcp.sh -q -n -t 10 >/dev/null 2>&1 || echo "NETBENCH-FAILED no DHCP lease"
  server=10.0.2.2
fi
/bin/netbench client \$server:5201 64 500
poweroff -f
INIT
chmod +x "$JOB/in/l2net/init"
(cd "$JOB/in/l2net" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$JOB/in/l2net.cpio"
rm -rf "$JOB/in/l2net"
nested_copy_tool "$JOB/in/rootfs" qemu-system-x86_64
cp -a /usr/share/qemu /usr/share/seabios "$JOB/in/rootfs/usr/share/"

cat >"$JOB/in/job.sh" <<JOB
runs=$RUNS
parts="${BENCH_NESTED_PARTS:-boot disk net}"
JOB
cat >>"$JOB/in/job.sh" <<'JOB'
now() { cut -d' ' -f1 /proc/uptime; }
exits() { cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo 0; }
APPEND="console=ttyS0 quiet panic=-1"
# vmmrss NAME: the VMM's resident memory beyond guest RAM at /init, the
# same way for both: VmRSS (and RssAnon, heap and stacks) less the resident
# part of the largest mapping of at least guest RAM's 256 MiB.
vmmrss() {
  # (Debian's busybox has no pgrep; one VMM runs at a time.)
  comm=petrel
  [ $1 = petrel ] || comm=qemu-system
  pid=
  for d in /proc/[0-9]*; do
    read -r c <$d/comm 2>/dev/null || continue
    case $c in "$comm"*) pid=${d#/proc/} ;; esac
  done
  [ -n "$pid" ] || return 0
  ram=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {sz = 0} /^Size:/ {sz = $2} /^Rss:/ && sz >= 262144 && $2 > r {r = $2} END {print r + 0}' /proc/$pid/smaps)
  awk -v n=$1 -v ram=$ram '/^VmRSS:/ {v = $2} /^RssAnon:/ {a = $2} END {if (v > ram) print n, v - ram, a - ram}' /proc/$pid/status
}
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
      case $l in *INIT-REACHED*) echo "$(now) $(exits)" >$OUT/$name.$i.mark; vmmrss $name >>$OUT/rss ;; esac
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
part() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
part boot && boot petrel timeout 300 petrel run -v -m 256M -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "$APPEND" -serial stdio
part boot && grep -h "resident memory" $OUT/petrel.*.err | head -1
part boot && boot qemu timeout 300 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256M -nodefaults -nographic -no-reboot \
  -serial stdio -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "$APPEND"
# disk NAME CMD...: diskbench's lines as "NAME TEST MBps" into $OUT/disk
disk() {
  name=$1; shift
  cp /job/disk.qcow2 /job/run.qcow2
  "$@" </dev/null >$OUT/disk.$name.$i.log 2>&1
  grep -q DISKBENCH-FAILED $OUT/disk.$name.$i.log && { echo "$name disk run $i failed:"; tail -5 $OUT/disk.$name.$i.log; }
  sed -n "s/.*DISKBENCH \([^ ]*\) MBps=\([0-9.]*\).*/$name \1 \2/p" $OUT/disk.$name.$i.log | tr -d '\r' | tee -a $OUT/disk
  rm -f /job/run.qcow2
}
DRIVE="file=/job/run.qcow2,format=qcow2,if=virtio,cache=writeback"
i=0
part disk || i=$runs
while [ $i -lt $runs ]; do
  i=$((i + 1))
  disk petrel timeout 600 petrel run -m 256M -kernel /l2/vmlinuz -initrd /job/l2disk.cpio -append "$APPEND" -serial stdio -drive "$DRIVE"
  disk qemu timeout 600 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256M -nodefaults -nographic -no-reboot \
    -serial stdio -kernel /l2/vmlinuz -initrd /job/l2disk.cpio -append "$APPEND" -drive "$DRIVE"
done
# net NAME MODE CMD...: netbench's lines as "NAME MODE-TEST VALUE" into $OUT/net
[ -c /dev/net/tun ] || insmod /job/tun.ko || echo "insmod tun failed"
# (stdout away too: a background job holding the job's output would keep
# L1 from seeing the job end)
/job/netbench serve :5201 >/dev/null 2>$OUT/netbench-server.err &
server=$!
tapup() {
  n=0; while [ ! -e /sys/class/net/ptap0 ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done
  ip addr add 10.9.0.1/24 dev ptap0 && ip link set ptap0 up
}
net() {
  name=$1 mode=$2; shift 2
  tp=
  if [ $mode = tap ]; then tapup & tp=$!; fi
  "$@" </dev/null >$OUT/net.$name.$mode.$i.log 2>&1
  [ -z "$tp" ] || wait $tp
  grep -q NETBENCH-FAILED $OUT/net.$name.$mode.$i.log && { echo "$name $mode net run $i failed:"; tail -5 $OUT/net.$name.$mode.$i.log; }
  sed -n "s/.*NETBENCH \([a-z]*\) [a-zA-Z]*=\([0-9.]*\).*/$name $mode-\1 \2/p" $OUT/net.$name.$mode.$i.log | tr -d '\r' | tee -a $OUT/net
}
QEMUNET="timeout 600 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256M -nodefaults -nographic -no-reboot -serial stdio -kernel /l2/vmlinuz -initrd /job/l2net.cpio"
PETRELNET="timeout 600 petrel run -m 256M -kernel /l2/vmlinuz -initrd /job/l2net.cpio -serial stdio"
TAP="tap,id=n0,ifname=ptap0,script=no,downscript=no,vhost=off"
i=0
part net || i=$runs
while [ $i -lt $runs ]; do
  i=$((i + 1))
  net petrel user $PETRELNET -append "$APPEND petrelnet=user" -netdev user,id=n0 -device virtio-net-pci,netdev=n0
  net qemu user $QEMUNET -append "$APPEND petrelnet=user" -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
  net petrel tap $PETRELNET -append "$APPEND petrelnet=tap" -netdev $TAP -device virtio-net-pci,netdev=n0
  net qemu tap $QEMUNET -append "$APPEND petrelnet=tap" -netdev $TAP -device virtio-net-pci,netdev=n0,romfile=
done
kill $server
JOB

nested_run "$JOB" "${BENCH_NESTED_TIMEOUT:-1500}" | grep -v '^job: ' || true
res=$JOB/out/results
ratio() { [[ -n $1 && -n $2 && $2 != 0 ]] && awk "BEGIN{printf \"%.2f\", $1 / $2}" || echo "-"; }
if [[ -s $res ]]; then
  best() { awk -v n="$1" -v col="$2" '$1 == n && (b == "" || $2 < b) {b = $2; e = $3} END {print (col == 2 ? b : e)}' "$res"; }
  p_ms=$(best petrel 2); p_ex=$(best petrel 3); q_ms=$(best qemu 2); q_ex=$(best qemu 3)
  rss=$(grep -ho 'VMM [0-9]* KiB beyond guest RAM' "$JOB"/out/petrel.*.err 2>/dev/null | awk '{print $2}' | sort -n | head -1)
  # Of that, the heap and stacks (anonymous); the rest is petrel's own
  # binary, mapped from L1's initramfs and shared by every petrel there.
  anon=$(grep -ho '[0-9]* KiB of it heap and stacks' "$JOB"/out/petrel.*.err 2>/dev/null | awk '{print $1}' | sort -n | head -1)
  # Both VMMs measured alike at /init (vmmrss in the job), the lowest run.
  vrss() { awk -v n=$1 -v c=$2 '$1 == n && (b == "" || $c < b) {b = $c} END {print b}' "$JOB/out/rss" 2>/dev/null; }
  echo
  echo "nested boot benchmark (inside L1: qemu TCG -cpu max, kvm-amd), $(basename "$NESTED_KERNEL"), 256 MiB, quiet console, best of $RUNS"
  printf '%-10s %14s %8s %14s %8s %14s %14s\n' vmm "to /init ms" "x qemu" "exits to /init" "x qemu" "RSS-RAM KiB" "of it anon KiB"
  printf '%-10s %14s %8s %14s %8s %14s %14s\n' petrel "${p_ms:--}" "$(ratio "$p_ms" "$q_ms")" "${p_ex:--}" "$(ratio "$p_ex" "$q_ex")" "$(vrss petrel 2)" "$(vrss petrel 3)"
  printf '%-10s %14s %8s %14s %8s %14s %14s\n' qemu-kvm "${q_ms:--}" "1.00" "${q_ex:--}" "1.00" "$(vrss qemu 2)" "$(vrss qemu 3)"
  echo "(petrel -v at power-off: ${rss:--} KiB beyond guest RAM, ${anon:--} KiB of it heap and stacks)"
  echo
elif [[ " ${BENCH_NESTED_PARTS:-boot} " == *" boot "* ]]; then
  echo "bench-nested: no boot results (console: $JOB/console.log)"
  exit 1
fi
dres=$JOB/out/disk
if [[ -s $dres ]]; then
  echo "guest disk throughput (diskbench in L2, O_DIRECT, depth 1, virtio-blk on qcow2 in L1, cache=writeback), best of $RUNS; x qemu above 1 is faster"
  printf '%-14s %12s %12s %8s\n' test "petrel MB/s" "qemu MB/s" "x qemu"
  for t in seq-write-1M seq-read-1M rand-write-4k rand-read-4k; do
    p=$(awk -v n=petrel -v t=$t '$1 == n && $2 == t && $3 > b {b = $3} END {print b}' "$dres")
    q=$(awk -v n=qemu -v t=$t '$1 == n && $2 == t && $3 > b {b = $3} END {print b}' "$dres")
    printf '%-14s %12s %12s %8s\n' $t "${p:--}" "${q:--}" "$(ratio "$p" "$q")"
  done
else
  echo "bench-nested: no disk results (logs in $JOB/out/disk.*)"
fi
nres=$JOB/out/net
if [[ -s $nres ]]; then
  echo
  echo "guest network (netbench in L2 against netbench in L1, virtio-net; user: Petrel's netstack vs QEMU's slirp; tap: both vhost=off), best of $RUNS; x qemu above 1 is better"
  printf '%-16s %12s %12s %8s\n' test petrel qemu "x qemu"
  for t in user-rtt user-upload user-download tap-rtt tap-upload tap-download; do
    case $t in
    *rtt) # microseconds: lower is better, the ratio is qemu / petrel
      p=$(awk -v n=petrel -v t=$t '$1 == n && $2 == t && (b == "" || $3 < b) {b = $3} END {print b}' "$nres")
      q=$(awk -v n=qemu -v t=$t '$1 == n && $2 == t && (b == "" || $3 < b) {b = $3} END {print b}' "$nres")
      printf '%-16s %12s %12s %8s\n' "$t us" "${p:--}" "${q:--}" "$(ratio "$q" "$p")" ;;
    *)
      p=$(awk -v n=petrel -v t=$t '$1 == n && $2 == t && $3 > b {b = $3} END {print b}' "$nres")
      q=$(awk -v n=qemu -v t=$t '$1 == n && $2 == t && $3 > b {b = $3} END {print b}' "$nres")
      printf '%-16s %12s %12s %8s\n' "$t MB/s" "${p:--}" "${q:--}" "$(ratio "$p" "$q")" ;;
    esac
  done
else
  echo "bench-nested: no network results (logs in $JOB/out/net.*)"
fi
echo "(logs in $JOB/out/)"
