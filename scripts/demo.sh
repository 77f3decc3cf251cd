#!/usr/bin/env bash
# make demo: the image half (scripts/demo-img.sh), then Linux on Petrel to
# an interactive busybox shell on the serial console. Debian's cloud kernel
# boots with root=/dev/vda on a qcow2 disk (ext4 made here), 2 vCPUs, and
# a virtio-net NIC on Petrel's user-mode network (-nic user, no root
# needed): the guest gets 10.0.2.15 by DHCP and reaches a small web page
# that the job serves on the host's (or L1's) loopback as 10.0.2.2.
# With VT-x/AMD-V behind this host's /dev/kvm it runs here; otherwise one
# level down (scripts/lib-nested.sh: qemu TCG -cpu max, kvm-amd in L1).
# Without a terminal on stdin, or with DEMO_NONINTERACTIVE=1, the guest
# shows its prompt and powers off by itself. DEMO_TIMEOUT (default 900 s)
# bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-nested.sh
source scripts/lib-l2.sh
W=$PWD/out/demo
job=$W/job
limit=${DEMO_TIMEOUT:-900}
say() { echo "demo: $*"; }

[[ -f scripts/demo-img.sh ]] && bash scripts/demo-img.sh
interactive=1
if [[ -n ${DEMO_NONINTERACTIVE:-} || ! -t 0 ]]; then interactive=0; fi
direct=0
if nested_hw_kvm; then direct=1; fi
nested_prepare >/dev/null
go build -o bin/petrel ./cmd/petrel
rm -rf "$W"
mkdir -p "$job/in"
l2_build "$W" "$job/in"
port=$((20000 + RANDOM % 20000))
append="console=ttyS0 root=/dev/vda petrel.role=shell petrel.httpport=$port"
cp "$NESTED_BUSYBOX" "$job/in/busybox"
mkdir -p "$job/in/www"
echo "Hello from the host, through Petrel's user-mode network." >"$job/in/www/index.html"
((interactive)) || append="$append petrel.noninteractive=1"
# The job: L2 on Petrel, its console on this one (stdin and stdout).
# (coreutils timeout needs --foreground to leave the terminal to Petrel;
# busybox's has no such flag and needs none.)
cat >"$job/in/job.sh" <<EOF
cd "\$(dirname "\$0")"
t="timeout $limit"
timeout --help 2>&1 | grep -q -- --foreground && t="timeout --foreground $limit"
# The web page the guest can fetch (as http://10.0.2.2:$port/).
./busybox httpd -f -p 127.0.0.1:$port -h www &
web=\$!
rc=0
\$t "\${PETREL:-petrel}" run -m 256M -smp 2 -kernel "\${L2_KERNEL:-/l2/vmlinuz}" \\
  -initrd l2-initrd.cpio -disk root.qcow2 -nic user -append "$append" || rc=\$?
kill \$web
exit \$rc
EOF

if ((interactive)); then
  say "in the guest's shell try: ls /dev/vda; cat /proc/cpuinfo; ip addr; wget -O - http://10.0.2.2:$port/; dmesg | tail"
  if ((direct)); then
    say "leave with: poweroff -f (or Ctrl-a x, Petrel's console escape)"
  else
    say "leave with: poweroff -f (or Ctrl-a x, which ends the L1 QEMU and all in it)"
  fi
fi
t0=$(date +%s)
rc=0
if ((direct)); then
  say "booting Linux on Petrel on this host's KVM"
  (cd "$job/in" && PETREL=$OLDPWD/bin/petrel L2_KERNEL=$NESTED_KERNEL sh ./job.sh) || rc=$?
else
  say "no hardware virtualization here: L1 (Linux under qemu TCG) boots first, about a minute, then Linux on Petrel inside it"
  NESTED_INTERACTIVE=$interactive nested_run "$job" "$limit" || rc=$?
  # Known, not understood (scripts/e2e.sh says more): nested, an L2 Linux
  # now and then triple-faults early in its boot (seen once in 4 demos
  # here, vCPU 1, with no ivshmem). Without a terminal the demo boots it
  # once more, loudly; with one, the person sees it and can run it again.
  if ((rc != 0 && !interactive)) && grep -aq 'triple fault' "$job/console.log" 2>/dev/null; then
    say "RETRY: $(grep -a 'triple fault' "$job/console.log" | head -n1 | tr -d '\r' | cut -c1-160)"
    say "RETRY: the nested L2 triple-faulted (a known nested flake, see scripts/e2e.sh); booting it once more"
    rc=0
    nested_run "$job" "$limit" || rc=$?
  fi
fi
say "ended with status $rc after $(($(date +%s) - t0)) s"
exit "$rc"
