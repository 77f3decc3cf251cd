#!/usr/bin/env bash
# make e2e-pseries: Petrel's pseries machine on real (nested) KVM.
#
# This host is x86, so the POWER host is emulated: qemu-system-ppc64
# -M pseries (TCG, POWER9, cap-nested-hv=on) boots Debian's stock ppc64el
# kernel, which loads kvm-hv and exposes /dev/kvm as a nested KVM-HV
# hypervisor. Inside it, Petrel's ppc64le binary (`petrel run-pseries`)
# runs two tiny big-endian pseries guests (machine/pseries/testdata/guest/):
#  - hello.S prints through H_PUT_TERM_CHAR and powers off through RTAS
#    power-off (H_RTAS), once with 1 vCPU and once with 2 (the secondary
#    stays stopped and must be released at power-off);
#  - smp.S, with 2 vCPUs, checks RTAS get-time-of-day, H_LOGICAL_MEMOP
#    copy and xor, RTAS nvram-store/fetch, start-cpu of CPU 1 and its
#    stop-self (query-cpu-stopped-state), and an IPI raised with H_IPI,
#    delivered by KVM_INTERRUPT at vector 0x500 and handled with H_XIRR
#    and H_EOI, and H_REGISTER_PROC_TBL of a radix process table.
#
# Why kvm-hv and not kvm_pr: Debian's ppc64el kernel is built without
# CONFIG_KVM_BOOK3S_64_PR (there is no kvm-pr.ko), so the nested path uses
# QEMU's TCG support for nested KVM-HV instead; nested KVM-HV runs its
# guests in radix mode only, which Petrel selects when
# KVM_PPC_ALLOCATE_HTAB answers EOPNOTSUPP.
#
# Needs: qemu-system-ppc (qemu-system-ppc64), binutils-powerpc64le-linux-gnu,
# python3, and apt access to Debian's ppc64el packages (the script adds the
# ppc64el architecture to dpkg when run as root). Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${E2E_PSERIES_DIR:-/tmp/petrel-e2e-pseries}
mkdir -p "$WORK"

die() { echo "e2e-pseries: $*" >&2; exit 1; }
for tool in qemu-system-ppc64 powerpc64le-linux-gnu-as powerpc64le-linux-gnu-ld powerpc64le-linux-gnu-objcopy python3 dpkg-deb apt-get; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y qemu-system-ppc binutils-powerpc64le-linux-gnu python3)"
done

# 1. Debian's ppc64el kernel and busybox, downloaded once.
if ! ls "$WORK"/linux-image-*.deb >/dev/null 2>&1 || ! ls "$WORK"/busybox-static_*.deb >/dev/null 2>&1; then
	if ! dpkg --print-foreign-architectures | grep -qx ppc64el; then
		[ "$(id -u)" = 0 ] || die "dpkg lacks the ppc64el architecture: run 'dpkg --add-architecture ppc64el && apt-get update' as root"
		dpkg --add-architecture ppc64el
		apt-get update >/dev/null || true # a lagging mirror for one suite is not fatal
	fi
	kpkg=$(apt-cache depends linux-image-powerpc64le:ppc64el | sed -n 's/.*Depends: \(linux-image-[^:]*\).*/\1/p' | head -1)
	[ -n "$kpkg" ] || die "cannot resolve linux-image-powerpc64le:ppc64el"
	(cd "$WORK" && apt-get download "$kpkg:ppc64el" busybox-static:ppc64el) || die "apt-get download failed"
fi
rm -rf "$WORK/k" "$WORK/bb" "$WORK/root"
mkdir -p "$WORK/k" "$WORK/bb" "$WORK/root/bin" "$WORK/root/dev" "$WORK/root/proc" "$WORK/root/sys"
dpkg-deb -x "$(ls "$WORK"/linux-image-*.deb | head -1)" "$WORK/k"
dpkg-deb -x "$(ls "$WORK"/busybox-static_*.deb | head -1)" "$WORK/bb"
vmlinux=$(ls "$WORK"/k/boot/vmlinux-* | head -1)
kvmdir=$(dirname "$(find "$WORK/k/lib/modules" -name kvm-hv.ko | head -1)")
[ -f "$kvmdir/kvm.ko" ] || die "the kernel package has no kvm.ko/kvm-hv.ko"

# 2. The guest programs and Petrel for ppc64le.
for g in hello smp; do
	powerpc64le-linux-gnu-as -a64 -mbig -mpower8 "machine/pseries/testdata/guest/$g.S" -o "$WORK/$g.o"
	powerpc64le-linux-gnu-ld -EB -m elf64ppc -Ttext=0 -e _start "$WORK/$g.o" -o "$WORK/$g.elf"
	powerpc64le-linux-gnu-objcopy -O binary "$WORK/$g.elf" "$WORK/root/$g.bin"
done
CGO_ENABLED=0 GOARCH=ppc64le go build -o "$WORK/root/petrel" ./cmd/petrel

# 3. The L1 initramfs: busybox, the KVM modules, Petrel, the guest.
cp "$WORK/bb/bin/busybox" "$WORK/root/bin/"
cp "$kvmdir/kvm.ko" "$kvmdir/kvm-hv.ko" "$WORK/root/"
cat > "$WORK/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "E2E: L1 kernel $(uname -r), $(grep -m1 '^cpu' /proc/cpuinfo)"
insmod /kvm.ko && insmod /kvm-hv.ko && echo "E2E: kvm-hv loaded"
[ -c /dev/kvm ] && echo "E2E: /dev/kvm present"
for smp in 1 2; do
	timeout 120 /petrel run-pseries -kernel /hello.bin -m 64M -smp $smp -kvm-type HV -console stdio </dev/null
	echo "E2E: petrel smp=$smp rc=$?"
done
timeout 120 /petrel run-pseries -kernel /smp.bin -m 64M -smp 2 -kvm-type HV -console stdio </dev/null
echo "E2E: petrel smp-guest rc=$?"
poweroff -f
INIT
chmod +x "$WORK/root/init"
python3 - "$WORK/root" >"$WORK/initrd.cpio" <<'PY'
# newc cpio writer (no cpio binary needed)
import os, stat, sys
root, out, ino = sys.argv[1], sys.stdout.buffer, [1]
def entry(name, mode, data=b"", nlink=1):
    h = "070701" + "".join("%08x" % v for v in (ino[0], mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    ino[0] += 1
    b = h.encode() + name.encode() + b"\0"
    out.write(b + b"\0" * (-len(b) % 4) + data + b"\0" * (-len(data) % 4))
for d, dirs, files in os.walk(root):
    dirs.sort()
    rel = os.path.relpath(d, root)
    if rel != ".":
        entry(rel, stat.S_IFDIR | 0o755, nlink=2)
    for f in sorted(files):
        p = os.path.join(d, f)
        st = os.lstat(p)
        data = os.readlink(p).encode() if stat.S_ISLNK(st.st_mode) else open(p, "rb").read()
        entry(os.path.normpath(os.path.join(rel, f)), st.st_mode, data)
entry("TRAILER!!!", 0)
PY

# 4. Boot it.
log="$WORK/console.log"
echo "e2e-pseries: booting $(basename "$vmlinux") under qemu-system-ppc64 (TCG, nested KVM-HV)..."
timeout 600 qemu-system-ppc64 \
	-M pseries,cap-nested-hv=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off \
	-cpu POWER9 -m 2G -smp 1 -nographic -no-reboot \
	-kernel "$vmlinux" -initrd "$WORK/initrd.cpio" -append "console=hvc0 quiet" \
	</dev/null >"$log" 2>&1 || true
grep -a 'E2E:\|petrel\| ok \|cpu[01] \|FAIL' "$log" || true

fail=0
for want in "E2E: /dev/kvm present" "E2E: petrel smp=1 rc=0" "E2E: petrel smp=2 rc=0" "E2E: petrel smp-guest rc=0" \
	"cpu0 up" "time ok" "memop ok" "xor ok" "nvram ok" "cpu1 up" "cpu1 stopped" "ipi ok" "proctbl ok"; do
	grep -aq "$want" "$log" || { echo "e2e-pseries: FAIL: missing '$want' (console log: $log)"; fail=1; }
done
n=$(grep -ac 'petrel pseries: hello, POWER!!' "$log" || true)
[ "$n" = 2 ] || { echo "e2e-pseries: FAIL: guest greeting seen $n times, want 2"; fail=1; }
n=$(grep -ac 'petrel run-pseries: guest power-off' "$log" || true)
[ "$n" = 3 ] || { echo "e2e-pseries: FAIL: RTAS power-off seen $n times, want 3"; fail=1; }
if grep -aq FAIL "$log"; then echo "e2e-pseries: FAIL: the smp guest reported a failed check"; fail=1; fi
[ $fail = 0 ] || exit 1
echo "e2e-pseries: ok (Petrel ran pseries guests on nested KVM-HV: vty output, RTAS time/NVRAM/start-cpu/stop-self/power-off, H_LOGICAL_MEMOP, an IPI through KVM_INTERRUPT; 1 and 2 vCPUs)"
