#!/usr/bin/env bash
# The Linux tier (make e2e, and part of make test): Debian's cloud kernel
# runs on Petrel and is the judge. Where this host's /dev/kvm has VT-x/AMD-V
# the job runs here; elsewhere it runs one level down (scripts/lib-nested.sh:
# qemu TCG -cpu max, kvm-amd in L1). One run of scripts/e2e-job.sh serves
# every scenario (see scripts/e2e-guest-init.sh); afterwards this script
# checks what the guests printed and what the host finds in the images:
#   root on qcow2  boot from an ext4 root made here (mkfs.ext4 -d, petrel img
#                  convert); files written with sha256 sums; debugfs reads them
#                  back out of qemu-img convert's raw copy; qemu-img check
#   data disks     QED (made by qemu-img), raw, and a qcow2 overlay on a
#                  backing file: the host's marker read by Linux, 1 MiB the
#                  guest wrote compared byte for byte, the backing file intact
#   hotplug        device_add/device_del of virtio-blk and ivshmem-plain over
#                  QMP: acpiphp sees and ejects each, Linux reads the disk's
#                  marker and the BAR2 marker and answers in BAR2, DEVICE_DELETED
#   ivshmem        two guests on one ivshmem-server, doorbells both ways
#                  through uio_pci_generic, patterns checked on both sides
#   SMP, reboot    2 vCPUs online; reboot -f boots Linux again in one Petrel
#   savevm         a Linux loop writing files: HMP savevm, kill -9, -loadvm in
#                  a new Petrel goes on from the save point; after a reboot,
#                  HMP loadvm into the running VM goes back to it; the files
#                  read back by debugfs, qemu-img check and snapshot -l
#   clean log      no WARNING/BUG/Call Trace/ACPI errors/PCI claim failures
# E2E_TIMEOUT bounds the nested run (default 1500 s: this shared machine's
# load can triple the usual 6-10 minutes); E2E_RECHECK=1 checks the last
# run's results again without running it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-nested.sh
source scripts/lib-l2.sh
W=$PWD/out/e2e
job=$W/job
t0=$(date +%s)
say() { echo "e2e: $*"; }

direct=0
if nested_hw_kvm; then direct=1; fi
for tool in mkfs.ext4 debugfs qemu-img cpio sha256sum; do
  command -v "$tool" >/dev/null || { say "FAIL: $tool not found (run scripts/deps.sh as root)"; exit 1; }
done
nested_prepare >/dev/null
go build -o bin/petrel ./cmd/petrel
forbidden='WARNING:|BUG:|Call Trace|ACPI (BIOS )?(Error|Warning)|Incorrect checksum|not CPU addressable|can.t claim|not listed by BIOS|Kernel panic|nobody cared|Firmware Bug|PCI: .*conflict'
out=$job/out
jrc=0
# E2E_RECHECK=1 checks the last run's results again without running it.
if [[ -z ${E2E_RECHECK:-} ]]; then
rm -rf "$W"
mkdir -p "$job/in"
l2_build "$W" "$job/in"
CGO_ENABLED=0 go build -o "$job/in/qmpsend" ./tools/qmpsend

# Data disks: a marker in the first bytes; Linux writes 1 MiB at 2 MiB.
marker() { printf 'petrel-e2e-marker-%s' "$1" >"$2"; truncate -s 16M "$2"; }
marker qed "$W/qed.raw"
qemu-img convert -f raw -O qed "$W/qed.raw" "$job/in/data.qed"
marker raw "$job/in/data.raw"
marker backing "$W/base.raw"
./bin/petrel img convert -f raw -O qcow2 "$W/base.raw" "$job/in/base.qcow2"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$job/in/overlay.qcow2"
# The savevm scenario's disk: an empty ext4 file system, as qcow2.
truncate -s 64M "$W/savevm.raw"
mkfs.ext4 -q -F -L petrel-savevm "$W/savevm.raw"
./bin/petrel img convert -f raw -O qcow2 "$W/savevm.raw" "$job/in/savevm.qcow2"
rm -f "$W/savevm.raw"
marker hotplug "$W/hot.raw"
./bin/petrel img convert -f raw -O qcow2 "$W/hot.raw" "$job/in/hot.qcow2"
cp scripts/e2e-job.sh "$job/in/job.sh"
# What Linux must not print (the job also reads it, to decide whether to boot
# the QEMU-KVM reference).
echo "$forbidden" >"$job/in/forbidden.re"
# QEMU-KVM for the reference boot: firmware here; in L1 also the binary and
# its libraries.
mkdir -p "$job/in/qemu-firmware"
for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin; do
  cp -L "$f" "$job/in/qemu-firmware/"
done
((direct)) || nested_copy_tool "$job/in/rootfs" qemu-system-x86_64
say "guest files ready in $(($(date +%s) - t0)) s"

if ((direct)); then
  say "running the job here on this host's KVM"
  rm -rf "$W/direct" "$out"
  cp -a "$job/in" "$W/direct"
  go build -o bin/petrel ./cmd/petrel
  (cd "$W/direct" && OUT=$out PETREL=$OLDPWD/bin/petrel L2_KERNEL=$NESTED_KERNEL sh ./job.sh) || jrc=$?
else
  say "running the job nested: L1 boots, then Linux runs on Petrel inside it"
  # The job prints its progress at least every few minutes even on a
  # loaded machine; 600 s of silence is a wedged L1, booted again.
  NESTED_IDLE_LIMIT=${NESTED_IDLE_LIMIT:-600} nested_run "$job" "${E2E_TIMEOUT:-1500}" || jrc=$?
  # Known, not understood: nested, an L2 Linux now and then triple-faults
  # (KVM_EXIT_SHUTDOWN; on AMD KVM resets the vCPU, so its state is lost):
  # twice in six full runs here, each time in a guest whose ivshmem RAM BAR
  # had been mapped (and once unmapped again) as a KVM memory slot, with no
  # oops first. Until it is explained the whole job runs once more, loudly,
  # and the first run's consoles are kept; on real hardware (direct) there
  # is no second run.
  if tf=$(grep -l 'triple fault' "$out"/*.err 2>/dev/null) && [[ -n $tf ]]; then
    say "RETRY: a nested L2 guest triple-faulted ($(basename -a $tf | tr '\n' ' ')): $(grep -h 'triple fault' $tf | head -n1 | cut -c1-200)"
    say "RETRY: running the whole job once more; the first run's files are in $W/first-try"
    rm -rf "$W/first-try"
    mv "$out" "$W/first-try"
    echo "$(basename -a $tf | tr '\n' ' ')" >"$W/retried"
    jrc=0
    NESTED_IDLE_LIMIT=${NESTED_IDLE_LIMIT:-600} nested_run "$job" "${E2E_TIMEOUT:-1500}" || jrc=$?
  fi
fi
echo "$jrc" >"$W/job.rc"
fi
jrc=$(cat "$W/job.rc" 2>/dev/null || echo 1)
base_sum=$(sha256sum <"$W/base.raw" | cut -d' ' -f1)

# The checks. Each scenario's verdict is printed; any failure fails the tier.
fail=0
declare -A verdict
bad() { say "FAIL [$1]: $2"; verdict[$1]=FAIL; fail=1; }
ok() { [[ ${verdict[$1]:-} == FAIL ]] || verdict[$1]=PASS; }
logs=("$out"/disks.log "$out"/ivshmem-a.log "$out"/ivshmem-b.log "$out"/savevm2.log)
all=$(cat "${logs[@]}" "$out/events" 2>/dev/null | tr -d '\r' || true)
need() { # need SCENARIO PATTERN...
  local s=$1 p
  shift
  for p in "$@"; do grep -Eq -- "$p" <<<"$all" || bad "$s" "missing '$p'"; done
  ok "$s"
}
if [[ ! -s $out/events ]]; then
  say "FAIL: no results came back from the job (status $jrc; 124: L1 timed out (E2E_TIMEOUT), wedged or panicked on every try; see the lines above and $job/console.log)"
  exit 1
fi
((jrc == 0)) || bad job "the job ended with status $jrc (console: $job/console.log)"
grep -q 'E2E-FAIL' <<<"$all" && bad guest "a guest reported: $(grep 'E2E-FAIL' <<<"$all" | head -3 | tr '\n' ' ')"

need root 'E2E-ROOT-MOUNTED /dev/vda /newroot ext4' 'E2E-ROOTFILE blob ' 'E2E-ROOTFILE note ' 'E2E-ROOTFILES-OK' 'E2E-EXIT disks 0'
need smp 'E2E-CPUS online=0-1 nproc=2' 'smpboot: Total of 2 processors activated'
need reboot 'E2E-REBOOTING' 'E2E-SECOND-BOOT' 'E2E-POWEROFF'
# Exactly two boots: a panic (panic=-1) would reboot it an extra time.
n=$(grep -c 'E2E-ROOT-MOUNTED' "$out/disks.log" 2>/dev/null || true)
[[ $n == 2 ]] || bad reboot "the disks guest mounted its root ${n:-0} times, want 2"
need disks 'E2E-MARKER vdb petrel-e2e-marker-qed' 'E2E-MARKER vdc petrel-e2e-marker-raw' 'E2E-MARKER vdd petrel-e2e-marker-backing'
need hotplug-blk 'E2E-HOTPLUG-BLK-SEEN vde slot=0000:00:06' 'E2E-HOTPLUG-BLK-READ petrel-e2e-marker-hotplug' 'E2E-UNPLUG-BLK-OK' 'E2E-QMP hot1 DEVICE_DELETED'
need hotplug-shm 'E2E-HOTPLUG-SHM-SEEN 0x1af4:0x1110' 'E2E-HOTPLUG-SHM-READ petrel-e2e ivshmem-plain marker' 'E2E-UNPLUG-SHM-OK' \
  'E2E-QMP shm1 DEVICE_DELETED' 'E2E-HOST-SHM-READ answered by the guest through BAR2'
need ivshmem 'E2E-IVSHMEM ivshmem-a id=' 'E2E-IVSHMEM ivshmem-b id=' 'E2E-A-RINGING' 'E2E-B-IRQ status=0x1' 'E2E-B-GOT-PATTERN' \
  'E2E-B-RANG' 'E2E-A-IRQ status=0x1' 'E2E-A-GOT-PATTERN' \
  'E2E-EXIT ivshmem-a 0' 'E2E-EXIT ivshmem-b 0'
need acpi 'BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] usable' 'Early table checksum verification enabled' \
  'ACPI: RSDP 0x' 'ACPI: XSDT 0x' 'ACPI: FACP 0x' 'ACPI: DSDT 0x' 'ACPI: FACS 0x' 'ACPI: APIC 0x' \
  'INT_SRC_OVR \(bus 0 bus_irq 9 global_irq 9 high level\)'

# savevm: the loop's numbers, read across the save (what the guest had
# printed when it was saved, then what the loaded guest printed), run
# 1..20 without a gap or a repeat; after the in-VM loadvm they run again
# from the save point to 20. The files are on the disk; qemu-img lists the
# snapshot with its VM state and checks the image clean after the kill and
# at the end.
svseq() { tr -d '\r' | grep -o 'E2E-SAVEVM-LOOP [0-9]*' | cut -d' ' -f2 | tr '\n' ' '; }
s=$(sed -n 's/^E2E-SAVEVM-SAVED //p' "$out/events" 2>/dev/null)
if [[ -n $s && -s $out/savevm1.at-save && -s $out/savevm2.log ]]; then
  first=$(cat "$out/savevm1.at-save" <(sed '/E2E-SAVEVM-REBOOTED/,$d' "$out/savevm2.log") | svseq)
  [[ $first == "$(seq 1 20 | tr '\n' ' ')" ]] || bad savevm "loop across save and -loadvm: $first (saved at $s)"
  grep -q 'E2E-SAVEVM-LOOP [0-9]' <(sed '/E2E-SAVEVM-REBOOTED/,$d' "$out/savevm2.log") || bad savevm "-loadvm: the guest printed no loop line"
  second=$(sed '1,/E2E-SAVEVM-REBOOTED/d' "$out/savevm2.log" | sed '/E2E-SAVEVM-REBOOTED/,$d' | svseq)
  [[ $second == "$(seq $((s + 1)) 20 | tr '\n' ' ')" || $second == "$(seq $((s + 2)) 20 | tr '\n' ' ')" ]] ||
    bad savevm "loop after the in-VM loadvm: $second (saved at $s)"
  [[ $(grep -c 'E2E-SAVEVM-FILES-OK' "$out/savevm2.log") == 2 ]] || bad savevm "the guest did not check its files twice"
  for img in savevm-killed.qcow2 savevm.qcow2; do
    qemu-img check -q "$out/$img" || bad savevm "qemu-img check $img"
  done
  qemu-img snapshot -l "$out/savevm.qcow2" | grep -Eq '^1 +s1 +[0-9.]+ [KMG]iB' || bad savevm "qemu-img snapshot -l shows no s1 with a VM state"
  grep -q '"return": *".*s1' "$out/qmp.log" || bad savevm "HMP info snapshots does not list s1"
  qemu-img convert -O raw "$out/savevm.qcow2" "$W/savevm.out.raw"
  for i in $(seq 1 20); do
    [[ $(debugfs -R "cat /f$i" "$W/savevm.out.raw" 2>/dev/null) == "file $i of the savevm loop" ]] || bad savevm "/f$i on the host"
  done
  debugfs -R "stat /done" "$W/savevm.out.raw" 2>/dev/null | grep -q Inode || bad savevm "/done missing on the host"
  rm -f "$W/savevm.out.raw"
  ok savevm
else
  bad savevm "no save point or no loaded run came back"
fi
need savevm 'E2E-EXIT savevm 0'

# Linux's log must be clean (the guests print their warnings and errors). A
# line is excused only when QEMU-KVM booting the same kernel on the same KVM
# printed it too (the job's reference boot).
norm() { sed -E 's/^E2E-DMESG //; s/^(<[0-9]>)?\[ *[0-9.]+\] //'; }
grep '^E2E-DMESG' "$out/reference.qemu" 2>/dev/null | tr -d '\r' | norm | sort -u >"$W/reference.lines" || true
excused=0
while IFS= read -r line; do
  if grep -Fxq -- "$line" "$W/reference.lines"; then
    excused=$((excused + 1))
    say "excused (QEMU-KVM in the same place printed it too): $line"
  else
    bad clean-log "Linux printed: $line"
  fi
done < <(grep -E "$forbidden" <<<"$all" | norm | sort -u)
ok clean-log

# What the host finds in the images.
if [[ -s $out/root.qcow2 ]]; then
  for img in root.qcow2 data.qed overlay.qcow2 hot.qcow2 base.qcow2; do
    ./bin/petrel img check -q "$out/$img" || bad images "petrel img check $img"
    qemu-img check -q "$out/$img" || bad images "qemu-img check $img"
  done
  qemu-img convert -O raw "$out/root.qcow2" "$W/root.out.raw"
  for f in blob note; do
    want=$(sed -n "s/.*E2E-ROOTFILE $f \([0-9a-f]*\).*/\1/p" <<<"$all" | head -1)
    got=$(debugfs -R "cat /data/$f" "$W/root.out.raw" 2>/dev/null | sha256sum | cut -d' ' -f1)
    [[ -n $want && $got == "$want" ]] || bad root "/data/$f on the host: sha256 $got, the guest wrote $want"
  done
  [[ $(debugfs -R "cat /data/boot2-done" "$W/root.out.raw" 2>/dev/null) == 2 ]] || bad root "/data/boot2-done missing on the host"
  for d in vdb:data.qed vdc:data.raw vdd:overlay.qcow2; do
    want=$(sed -n "s/.*E2E-WROTE ${d%%:*} 2 \([0-9a-f]*\).*/\1/p" <<<"$all" | head -1)
    qemu-img convert -O raw "$out/${d#*:}" "$W/check.raw"
    got=$(dd if="$W/check.raw" bs=1M skip=2 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    [[ -n $want && $got == "$want" ]] || bad disks "${d#*:} at 2 MiB: sha256 $got, the guest wrote $want"
  done
  qemu-img convert -O raw "$out/base.qcow2" "$W/check.raw"
  [[ $(sha256sum <"$W/check.raw" | cut -d' ' -f1) == "$base_sum" ]] || bad disks "the overlay's backing file changed"
  rm -f "$W/check.raw" "$W/root.out.raw"
  ok images
  ok root
  ok disks
else
  bad images "the job brought back no disk images"
fi

echo "e2e: results ($( ((direct)) && echo "direct KVM" || echo "nested: L2 on Petrel in L1 under qemu TCG")):"
for s in root disks smp reboot hotplug-blk hotplug-shm ivshmem savevm acpi clean-log images; do
  printf 'e2e:   %-12s %s\n' "$s" "${verdict[$s]:-FAIL}$([[ $s == clean-log ]] && ((excused)) && echo " ($excused lines excused by QEMU-KVM)")"
done
if [[ -s $W/retried ]]; then
  say "NOTE: these results are the second run's: the first ended in an L2 triple fault in $(cat "$W/retried")(see $W/first-try)"
fi
if ((fail)); then
  # CI shows only the end of the output: repeat what a Petrel that exited
  # non-zero printed on stderr here, last.
  while read -r _ name code; do
    [[ $code == 0 ]] && continue
    say "petrel run ($name) exited with $code; the end of its stderr:"
    tail -n 15 "$out/$name.err" 2>/dev/null | sed 's/^/e2e:   | /'
  done < <(grep '^E2E-EXIT ' "$out/events" 2>/dev/null)
  say "FAIL after $(($(date +%s) - t0)) s (guest consoles and images: $out; L1 console: $job/console.log)"
  exit 1
fi
say "PASS in $(($(date +%s) - t0)) s"
