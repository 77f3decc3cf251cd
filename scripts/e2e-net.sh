#!/usr/bin/env bash
# Real Linux on Petrel's virtio-net, one level down (scripts/lib-nested.sh):
# in L1 (real KVM), Petrel boots Debian's cloud kernel as L2 with
# `-nic user,hostfwd=...`. The L2 guest (busybox) gets its address by DHCP
# (udhcpc), fetches a 4 MiB file from an HTTP server on L1's loopback
# through the user-mode NAT (10.0.2.2) and prints its sha256, then serves a
# file of its own on port 8080, which L1 fetches through hostfwd and checks
# against the digest the guest printed. Exit status 0 only when both
# digests match.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-nested.sh
nested_prepare

job=out/nested-net
rm -rf "$job" && mkdir -p "$job/in" "$job/l2/bin" "$job/l2/modules"
cp "$NESTED_BUSYBOX" "$job/l2/bin/busybox"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover drivers/net/net_failover \
  drivers/net/virtio_net; do
  cp "$NESTED_MODDIR/kernel/$m.ko" "$job/l2/modules/"
done

# L2's init: modules, DHCP, fetch through NAT, serve through hostfwd.
cat >"$job/l2/init" <<'L2'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /srv
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  insmod /modules/$m.ko || echo "L2: insmod $m failed"
done
cat >/tmp/dhcp.sh <<'S'
#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add $ip/${mask:-24} dev $interface
ip route add default via $router dev $interface
echo "L2: DHCP lease $ip router $router dns $dns"
S
chmod +x /tmp/dhcp.sh
ip link set lo up
ip link set eth0 up || echo "L2: no eth0: $(ls /sys/class/net)"
echo "L2: features $(cat /sys/class/net/eth0/device/features 2>/dev/null)"
udhcpc -i eth0 -s /tmp/dhcp.sh -q -n -t 10 || echo "L2: DHCP failed"
if wget -q -O /tmp/file http://10.0.2.2:8000/file; then
  echo "L2-GOT $(sha256sum /tmp/file | cut -d' ' -f1)"
else
  echo "L2: wget through NAT failed"
fi
dd if=/dev/urandom of=/srv/back bs=1M count=4 2>/dev/null
echo "L2-SERVING $(sha256sum /srv/back | cut -d' ' -f1)"
httpd -f -p 8080 -h /srv
L2
chmod +x "$job/l2/init"
(cd "$job/l2" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$job/in/l2.cpio"

# L1's job: an HTTP server on loopback, Petrel with user-mode networking.
cat >"$job/in/job.sh" <<'JOB'
set -u
mkdir -p /tmp/www
dd if=/dev/urandom of=/tmp/www/file bs=1M count=4 2>/dev/null
want=$(sha256sum /tmp/www/file | cut -d' ' -f1)
httpd -p 127.0.0.1:8000 -h /tmp/www
petrel run -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "console=ttyS0 quiet" -m 512M -smp 1 \
  -serial file:/tmp/guest.log -nic user,hostfwd=tcp:127.0.0.1:18080-:8080 >/tmp/petrel.log 2>&1 &
pid=$!
wait_for() { # PATTERN SECONDS
  i=0
  while [ $i -lt $2 ]; do
    grep -q "$1" /tmp/guest.log 2>/dev/null && return 0
    kill -0 $pid 2>/dev/null || return 1
    sleep 1; i=$((i+1))
  done
  return 1
}
rc=0
if wait_for "L2-GOT\|wget through NAT failed" 600 && grep -q "L2-GOT $want" /tmp/guest.log; then
  echo "PASS: the guest fetched 4 MiB from L1's loopback through NAT, sha256 $want"
else
  echo "FAIL: guest fetch through NAT (want $want)"; rc=1
fi
if wait_for "L2-SERVING" 120; then
  gsum=$(grep -o "L2-SERVING [0-9a-f]*" /tmp/guest.log | cut -d' ' -f2)
  sleep 2
  if wget -q -O /tmp/back http://127.0.0.1:18080/back && [ "$(sha256sum /tmp/back | cut -d' ' -f1)" = "$gsum" ]; then
    echo "PASS: L1 fetched 4 MiB from the guest through hostfwd, sha256 $gsum"
  else
    echo "FAIL: fetch through hostfwd (guest sha256 $gsum)"; rc=1
  fi
else
  echo "FAIL: guest never served"; rc=1
fi
kill $pid 2>/dev/null
cp /tmp/guest.log /tmp/petrel.log $OUT/ 2>/dev/null
grep "L2" /tmp/guest.log
echo "petrel: $(tail -3 /tmp/petrel.log)"
exit $rc
JOB
nested_run "$job" "${NESTED_TIMEOUT:-1500}"
