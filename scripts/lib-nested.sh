# Runs jobs on real KVM by nesting (sourced, not run).
#
# This host may have no /dev/kvm (or only kvm_pvm, the software hypervisor).
# Real KVM is then reached one level down: qemu-system-x86_64 under TCG with
# `-cpu max` exposes AMD SVM with NPT, Debian's cloud kernel (L1, the one
# scripts/fetch-kernel.sh fetches) loads irqbypass.ko, kvm.ko and kvm-amd.ko
# from its own package and gets /dev/kvm, and static Petrel runs there.
#
# Contract (scripts/test-kvm.sh, scripts/e2e.sh and the demo rely on it):
#
#   nested_prepare
#       Fetches the kernel, finds a static busybox (the installed one when it
#       is static, else Debian's busybox-static unpacked under out/nested)
#       and builds bin/petrel-static (CGO_ENABLED=0). Sets NESTED_KERNEL (the
#       bzImage), NESTED_MODDIR (its lib/modules/VERSION) and NESTED_BUSYBOX.
#
#   nested_run JOBDIR [TIMEOUT_SECONDS]      (default 900)
#       JOBDIR/in/ holds job.sh and any files it needs. L1 boots with an
#       initramfs holding busybox, the kvm modules, /bin/petrel (static), the
#       L2 kernel at /l2/vmlinuz (the same bzImage) and JOBDIR/in at /job;
#       JOBDIR/in/rootfs/, when present, is merged into L1's / (see
#       nested_copy_tool). L1's init loads the modules, checks /dev/kvm, runs
#       `sh /job/job.sh` in /job with OUT=/out, HOME=/root and the L1 kernel's
#       modules directory in NESTED_L1_MODULES, and prints its output to the
#       console prefixed "job: ". Then /out travels back through a raw virtio
#       disk (busybox tar) into JOBDIR/out/, the job's exit code in
#       JOBDIR/out/rc, and L1 powers off. The console is in JOBDIR/console.log;
#       "nested:" and "job:" lines are echoed to stdout as they come, with the
#       time L1 took to boot. Returns the job's exit code; a failed L1 boot,
#       a missing /dev/kvm or a timeout returns non-zero with the log's tail.
#       Knobs: NESTED_CPU (default max; `qemu64,-svm` is the negative
#       control: kvm-amd refuses and nested_run fails), NESTED_MEM (4G),
#       NESTED_SMP (2), NESTED_ACCEL (tcg; tcg,thread=single runs both
#       L1 vCPUs on one host thread), NESTED_OUT_SIZE (raw out-disk size, 2G sparse),
#       NESTED_APPEND (extra L1 kernel parameters), NESTED_IDLE_LIMIT (900 s
#       of console silence count as a wedged L1), NESTED_STALL_LIMIT (120 s
#       in which QEMU uses no CPU count as one too), NESTED_RETRY (1: a wedged
#       or timed-out L1 is booted once more, one whose kernel panicked up
#       to NESTED_PANIC_RETRIES (5) times more; 0: never), NESTED_INTERACTIVE=1
#       (L1's serial console and the job's stdin/stdout are this terminal:
#       no console.log, no "job: " prefix; the demo's shell),
#       NESTED_KVM_TRACE=1 (L1 records KVM's tracepoints until the first
#       shutdown intercept, a triple fault, and the tail comes back in
#       JOBDIR/out/kvm-trace.txt; this costs L1 time).
#
#   nested_copy_tool ROOTFS PROGRAM...
#       Copies host programs with the shared libraries ldd names (and the
#       dynamic loader) under ROOTFS (use JOBDIR/in/rootfs), so that tools
#       such as qemu-img run inside L1. nested_copy_libs ROOTFS FILE... copies
#       only the libraries of FILEs (QEMU's modules, dynamic test binaries).
#
#   nested_hw_kvm
#       Succeeds when this host's own /dev/kvm has hardware virtualization
#       (VT-x/AMD-V with kvm_intel/kvm_amd): callers may then run directly.
#       Prints which path applies and why.

NESTED_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NESTED_WORK=$NESTED_REPO/out/nested

nested_log() { echo "nested: $*"; }

nested_hw_kvm() {
  if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
    nested_log "no usable /dev/kvm on this host: running nested (qemu TCG -cpu max, kvm-amd in L1)"
    return 1
  fi
  if grep -qw kvm_pvm /proc/modules 2>/dev/null; then
    nested_log "/dev/kvm here is kvm_pvm (no hardware virtualization): running nested"
    return 1
  fi
  if grep -Eqw 'vmx|svm' /proc/cpuinfo && grep -Eqw 'kvm_intel|kvm_amd' /proc/modules 2>/dev/null; then
    nested_log "/dev/kvm here has hardware virtualization ($(grep -Eow 'kvm_intel|kvm_amd' /proc/modules | head -1)): running directly"
    return 0
  fi
  nested_log "/dev/kvm here is not backed by kvm_intel/kvm_amd: running nested"
  return 1
}

# nested_static FILE: succeeds when FILE is a statically linked executable.
# (ldd fails on a static file: under pipefail a pipe into grep would too.)
nested_static() {
  local out
  out=$(LC_ALL=C ldd "$1" 2>&1) || true
  [[ -x $1 && $out == *'not a dynamic executable'* ]]
}

nested_prepare() {
  local tool
  for tool in qemu-system-x86_64 cpio tar; do
    command -v "$tool" >/dev/null || { echo "nested: $tool not found (apt-get install -y qemu-system-x86 cpio tar)" >&2; return 1; }
  done
  mkdir -p "$NESTED_WORK"
  NESTED_KERNEL=$(cd "$NESTED_REPO" && bash scripts/fetch-kernel.sh) || return 1
  NESTED_KERNEL=$NESTED_REPO/$NESTED_KERNEL
  local ver
  ver=$(basename "$NESTED_KERNEL"); ver=${ver#vmlinuz-}
  NESTED_MODDIR=$NESTED_REPO/out/kernel/root/lib/modules/$ver
  [[ -f $NESTED_MODDIR/kernel/arch/x86/kvm/kvm-amd.ko ]] || { echo "nested: $NESTED_MODDIR has no kvm-amd.ko" >&2; return 1; }
  if nested_static /bin/busybox; then
    NESTED_BUSYBOX=/bin/busybox
  else
    NESTED_BUSYBOX=$NESTED_WORK/busybox/bin/busybox
    if ! nested_static "$NESTED_BUSYBOX"; then
      nested_log "fetching Debian's busybox-static"
      (cd "$NESTED_WORK" && rm -f busybox-static_*.deb && apt-get download busybox-static >&2) || return 1
      rm -rf "$NESTED_WORK/busybox"
      dpkg-deb -x "$NESTED_WORK"/busybox-static_*.deb "$NESTED_WORK/busybox" || return 1
    fi
  fi
  (cd "$NESTED_REPO" && CGO_ENABLED=0 go build -o bin/petrel-static ./cmd/petrel) || return 1
  NESTED_PETREL=$NESTED_REPO/bin/petrel-static
}

nested_copy_tool() {
  local root=$1 prog path
  shift
  for prog in "$@"; do
    path=$(command -v "$prog") || { echo "nested: $prog not found" >&2; return 1; }
    mkdir -p "$root/usr/bin"
    cp -L "$path" "$root/usr/bin/$(basename "$path")"
    nested_copy_libs "$root" "$path" || return 1
  done
}

# nested_copy_libs ROOTFS FILE...: the shared libraries (and the loader)
# the files need, at their own paths under ROOTFS.
nested_copy_libs() {
  local root=$1 f lib
  shift
  for f in "$@"; do
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -Ln "$lib" "$root$lib"
    done
  done
}

# nested_init writes L1's /init.
nested_init() {
  cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/sbin:/usr/sbin HOME=/root
mkdir -p /proc /sys /dev /tmp /root /out /run
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/shm; mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp; mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up 2>/dev/null
echo "nested: L1 init after $(cut -d' ' -f1 /proc/uptime) s of L1 uptime, kernel $(uname -r), $(nproc) CPUs"
M=/l1/modules
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do insmod $M/$m.ko || echo "nested: insmod $m failed"; done
for m in irqbypass kvm kvm-amd; do insmod $M/$m.ko || echo "nested: insmod $m failed"; done
finish() {
  echo "$1" > /out/rc
  sync
  if [ -b /dev/vda ]; then
    tar -cf /dev/vda -C /out . && sync && echo "nested: out copied back"
  else
    echo "nested: no /dev/vda to copy /out back"
  fi
  poweroff -f
}
if [ ! -c /dev/kvm ]; then
  echo "nested: FAIL: no /dev/kvm in L1 (kvm-amd refused: $(dmesg | grep -i -m1 -E 'kvm|svm' ))"
  finish 97
fi
echo "nested: /dev/kvm ready ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))"
[ -d /job/rootfs ] && cp -a /job/rootfs/. / && rm -rf /job/rootfs
cd /job
export OUT=/out NESTED_L1_MODULES=$M
T=/sys/kernel/tracing
if grep -qw nested.kvmtrace /proc/cmdline && mount -t tracefs nodev $T; then
  # KVM's events in a ring buffer that stops at the first shutdown
  # intercept (SVM_EXIT_SHUTDOWN, 0x7f): its tail is what led to a triple
  # fault, which KVM on AMD cannot show in the vCPU's registers.
  echo 4096 > $T/buffer_size_kb
  echo 1 > $T/events/kvm/enable
  echo 0 > $T/events/kvm/kvm_fpu/enable; echo 0 > $T/events/kvm/kvm_write_tsc_offset/enable
  echo 'traceoff if exit_reason == 127' > $T/events/kvm/kvm_exit/trigger
  echo 1 > $T/tracing_on
  echo "nested: KVM tracepoints on, stopping at the first shutdown intercept"
fi
if grep -qw nested.interactive /proc/cmdline; then
  sh /job/job.sh </dev/console >/dev/console 2>&1; echo $? > /tmp/job.rc
else
  # A read loop, not sed: sed buffers its output and the progress comes late.
  ( sh /job/job.sh < /dev/null 2>&1; echo $? > /tmp/job.rc ) | while IFS= read -r l; do echo "job: $l"; done
fi
rc=$(cat /tmp/job.rc 2>/dev/null || echo 98)
echo "nested: job exited with $rc"
if [ -f $T/trace ] && [ "$(cat $T/tracing_on)" = 0 ]; then
  tail -n 30000 $T/trace > /out/kvm-trace.txt
  echo "nested: a vCPU hit a shutdown intercept: KVM's last events in kvm-trace.txt"
fi
finish "$rc"
INIT
}

# nested_run boots L1 again, loudly, when L1 itself failed without a verdict
# on the job: once when it timed out or went silent, and up to
# NESTED_PANIC_RETRIES (5) times when its own kernel panicked (seen: a stack
# overflow in L1's kernel, a %gs-relative read faulting inside
# exc_page_fault, under QEMU as the L2 VMM as well as under Petrel; most
# often when a KVM memory slot of an ivshmem BAR goes away, and three times
# in a row in one clean-clone run). A userspace process cannot do that to a
# correct kernel on a correct CPU: it is L1 (TCG's nested SVM) failing. A job
# that ran and failed is never retried (each Go test binary has its own
# -test.timeout; each e2e step its own time limit). Returns 124 when every
# try ended without a verdict.
nested_run() {
  local rc=0 wedges=0 panics=0 max_panics=${NESTED_PANIC_RETRIES:-5}
  while :; do
    rc=0
    nested_run_once "$@" || rc=$?
    [[ ${NESTED_INTERACTIVE:-0} != 1 && ${NESTED_RETRY:-1} == 1 ]] || break
    if [[ $rc == 124 ]] && ((wedges < 1)); then
      wedges=$((wedges + 1))
      nested_log "RETRY: L1 wedged or timed out without a verdict; booting it once more"
    elif [[ $rc == 125 ]] && ((panics < max_panics)); then
      panics=$((panics + 1))
      nested_log "RETRY: L1's own kernel panicked without a verdict (try $panics of $max_panics more); booting it again"
    else
      break
    fi
  done
  [[ $rc != 125 ]] || rc=124
  return "$rc"
}

nested_run_once() {
  local job=$1 limit=${2:-900}
  [[ -f $job/in/job.sh ]] || { echo "nested: $job/in/job.sh missing" >&2; return 1; }
  [[ -n ${NESTED_KERNEL:-} ]] || nested_prepare || return 1
  job=$(cd "$job" && pwd)
  local root=$job/root
  rm -rf "$root" "$job/out" "$job/out.raw" "$job/initrd.cpio"
  mkdir -p "$root/bin" "$root/l1/modules" "$root/l2" "$job/out"
  cp "$NESTED_BUSYBOX" "$root/bin/busybox"
  cp "$NESTED_PETREL" "$root/bin/petrel"
  cp "$NESTED_KERNEL" "$root/l2/vmlinuz"
  local m
  for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd drivers/virtio/virtio_ring drivers/virtio/virtio \
    drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk; do
    cp "$NESTED_MODDIR/kernel/$m.ko" "$root/l1/modules/"
  done
  cp -a "$job/in" "$root/job"
  nested_init >"$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$job/initrd.cpio" || return 1
  rm -rf "$root"
  truncate -s "${NESTED_OUT_SIZE:-2G}" "$job/out.raw"

  local log=$job/console.log start now
  : >"$log"
  start=$(date +%s.%N)
  nested_log "L1 booting ($(du -m "$job/initrd.cpio" | cut -f1) MiB initramfs, -cpu ${NESTED_CPU:-max}, timeout ${limit}s)"
  if [[ ${NESTED_INTERACTIVE:-0} == 1 ]]; then
    # The job owns this terminal through L1's serial console (the demo).
    timeout --foreground "$limit" qemu-system-x86_64 -accel "${NESTED_ACCEL:-tcg}" -cpu "${NESTED_CPU:-max}" -smp "${NESTED_SMP:-2}" \
      -m "${NESTED_MEM:-4G}" -nographic -no-reboot -nic none -kernel "$NESTED_KERNEL" -initrd "$job/initrd.cpio" \
      -append "console=ttyS0 quiet panic=-1 nested.interactive ${NESTED_APPEND:-}" \
      -drive "file=$job/out.raw,format=raw,if=virtio,cache=unsafe" || true
    tar -xf "$job/out.raw" -C "$job/out" 2>/dev/null
    rm -f "$job/out.raw" "$job/initrd.cpio"
    return "$(cat "$job/out/rc" 2>/dev/null || echo 1)"
  fi
  timeout "$limit" qemu-system-x86_64 -accel "${NESTED_ACCEL:-tcg}" -cpu "${NESTED_CPU:-max}" -smp "${NESTED_SMP:-2}" -m "${NESTED_MEM:-4G}" \
    -nographic -no-reboot -nic none -kernel "$NESTED_KERNEL" -initrd "$job/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 $( ((${NESTED_KVM_TRACE:-0})) && echo nested.kvmtrace) ${NESTED_APPEND:-}" \
    -drive "file=$job/out.raw,format=raw,if=virtio,cache=unsafe" </dev/null >"$log" 2>&1 &
  local qpid=$! qrc=0 seen=0 n line quiet_since=$SECONDS wedged=0
  # A second sign of a wedged L1: QEMU itself stops using CPU. A working L1
  # always runs something (the job polls every second); one seen wedged
  # took no CPU at all for minutes, its timers never firing.
  local cpu=0 cpu_then=0 still_since=$SECONDS qemu_pid=
  # Echo the progress lines while L1 runs (complete lines only); the first
  # one from init times the boot.
  while :; do
    kill -0 "$qpid" 2>/dev/null || break
    n=$(wc -l <"$log")
    if ((n > seen)); then
      # Only the job's and this script's lines are progress: L1's kernel
      # can keep printing while it is wedged (seen: "soft lockup - CPU#0
      # stuck for 1096s" every 28 s, in KVM_RUN of a test binary).
      while IFS= read -r line; do
        line=${line%$'\r'}
        case $line in nested:* | job:*) quiet_since=$SECONDS ;; esac
        case $line in
          job:*) echo "$line" ;;
          *nested:\ L1\ init*)
            now=$(date +%s.%N)
            echo "nested:${line#*nested:}"
            nested_log "L1 booted in $(awk "BEGIN{printf \"%.1f\", $now - $start}") s (host clock)" ;;
          nested:* | job:*) echo "$line" ;;
        esac
      done < <(sed -n "$((seen + 1)),${n}p" "$log")
      seen=$n
    fi
    if ((SECONDS - quiet_since > ${NESTED_IDLE_LIMIT:-900})); then
      # Nothing from the job for that long: L1 itself is stuck.
      ((wedged)) || kill "$qpid" 2>/dev/null
      wedged=1
    fi
    [[ -n $qemu_pid ]] || qemu_pid=$(pgrep -P "$qpid" -f qemu-system 2>/dev/null | head -n1)
    if [[ -n $qemu_pid ]] && cpu=$(awk '{print $14 + $15}' "/proc/$qemu_pid/stat" 2>/dev/null); then
      if ((cpu - cpu_then > 10)); then
        cpu_then=$cpu still_since=$SECONDS
      elif ((SECONDS - still_since > ${NESTED_STALL_LIMIT:-120})); then
        echo "nested: L1 used no CPU for ${NESTED_STALL_LIMIT:-120}s (its timers stopped: L1 wedged)" >&2
        wedged=1
        kill "$qpid" 2>/dev/null
      fi
    fi
    sleep 1
  done
  wait "$qpid" || qrc=$?
  if ((wedged)); then
    echo "nested: FAIL: L1 wedged (console silent for ${NESTED_IDLE_LIMIT:-900}s or no CPU used for ${NESTED_STALL_LIMIT:-120}s); stopped it" >&2
  fi
  while IFS= read -r line; do
    line=${line%$'\r'}
    case $line in nested:* | job:*) echo "$line" ;; esac
  done < <(tail -n +$((seen + 1)) "$log")
  nested_log "L1 ran $(awk "BEGIN{printf \"%.0f\", $(date +%s.%N) - $start}") s"
  tar -xf "$job/out.raw" -C "$job/out" 2>/dev/null
  rm -f "$job/out.raw" "$job/initrd.cpio"
  if [[ $qrc == 124 || $wedged == 1 ]]; then
    ((wedged)) || echo "nested: FAIL: L1 timed out after ${limit}s; the console's tail ($log):" >&2
    tail -n 30 "$log" >&2
    return 124
  fi
  if [[ ! -s $job/out/rc ]] && grep -aq 'Kernel panic - not syncing' "$log"; then
    # L1's own kernel died (seen: a stack overflow in L1 under TCG's nested
    # SVM): no verdict on the job, so nested_run boots L1 again.
    echo "nested: FAIL: L1's kernel panicked; the console's tail ($log):" >&2
    tail -n 30 "$log" >&2
    cp "$log" "$job/console-panic-$(date +%s).log"
    return 125
  fi
  if [[ ! -s $job/out/rc ]]; then
    echo "nested: FAIL: L1 ended (qemu status $qrc) without the job's exit code; the console's tail ($log):" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
  local rc
  rc=$(cat "$job/out/rc")
  if [[ $rc == 97 ]]; then
    echo "nested: FAIL: L1 has no /dev/kvm (-cpu ${NESTED_CPU:-max}); the console's tail ($log):" >&2
    tail -n 15 "$log" >&2
  fi
  return "$rc"
}
