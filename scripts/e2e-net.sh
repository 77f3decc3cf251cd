#!/usr/bin/env bash
# Real Linux on Petrel's virtio-net, one level down (scripts/lib-nested.sh):
# in L1 (real KVM), Petrel boots Debian's cloud kernel as L2 twice.
#  user: `-nic user,hostfwd=...`: the L2 guest (busybox) gets its address by
#        DHCP (udhcpc), fetches a 4 MiB file from an HTTP server on L1's
#        loopback through the user-mode NAT (10.0.2.2) and prints its
#        sha256, then serves a file of its own on port 8080, which L1
#        fetches through hostfwd and checks against the digest the guest
#        printed.
#  tap:  `-netdev tap,ifname=ptap0 -device virtio-net-pci`: L1 gives the tap
#        10.9.0.1, the guest 10.9.0.2 pings it and moves 100 MiB each way
#        (with checksum and TSO offloads negotiated), digests checked.
#  hotplug: a guest with no NIC; over QMP, netdev_add (user) and device_add
#        virtio-net-pci: Linux's acpiphp finds the NIC, the guest takes a
#        DHCP lease and fetches 4 MiB through it (digest checked); then
#        device_del: DEVICE_DELETED arrives and eth0 is gone in the guest;
#        netdev_del frees the backend.
# Exit status 0 only when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-nested.sh
source scripts/lib-l2.sh
nested_prepare

job=out/nested-net
rm -rf "$job" && mkdir -p "$job/in" "$job/l2/bin" "$job/l2/modules"
cp "$NESTED_BUSYBOX" "$job/l2/bin/busybox"
# shellcheck disable=SC2086 # the list is words
l2_modules "$job/l2/modules" $L2_NET_MODS
l2_module_names $L2_NET_MODS >"$job/l2/modules/order"

CGO_ENABLED=0 go build -o "$job/in/qmpsend" ./tools/qmpsend
# L1's tap needs tun.ko (a module in Debian's cloud kernel).
cp "$NESTED_MODDIR/kernel/drivers/net/tun.ko" "$job/in/"

# L2's init: modules, DHCP, fetch through NAT, serve through hostfwd.
cat >"$job/l2/init" <<'L2'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /srv
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
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
if ! grep -q petrelnet=hotplug /proc/cmdline; then
  ip link set eth0 up || echo "L2: no eth0: $(ls /sys/class/net)"
  echo "L2: features $(cat /sys/class/net/eth0/device/features 2>/dev/null)"
fi
mode=user
grep -q petrelnet=tap /proc/cmdline && mode=tap
if grep -q petrelnet=hotplug /proc/cmdline; then
  [ -e /sys/class/net/eth0 ] && echo "L2: eth0 before the hot-plug"
  echo "L2-WAITING-NIC"
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
  [ -e /sys/class/net/eth0 ] || { echo "L2: no hot-plugged eth0"; poweroff -f; }
  echo "L2-NIC-UP $(cat /sys/class/net/eth0/address) at PCI $(basename $(readlink -f /sys/class/net/eth0/device/..))"
  ip link set eth0 up
  udhcpc -i eth0 -s /tmp/dhcp.sh -q -n -t 10 || echo "L2: DHCP failed"
  if wget -q -O /tmp/file http://10.0.2.2:8000/file4; then
    echo "L2-GOT $(sha256sum /tmp/file | cut -d' ' -f1)"
  else
    echo "L2: wget through the hot-plugged NIC failed"
  fi
  i=0; while [ -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
  [ -e /sys/class/net/eth0 ] && echo "L2: eth0 still there" || echo "L2-NIC-GONE"
  sleep 1000
fi
if [ $mode = tap ]; then
  ip addr add 10.9.0.2/24 dev eth0
  server=10.9.0.1
  ping -c 3 -W 5 $server >/dev/null && echo "L2-PING ok" || echo "L2: ping $server failed"
  size=100
else
  udhcpc -i eth0 -s /tmp/dhcp.sh -q -n -t 10 || echo "L2: DHCP failed"
  server=10.0.2.2
  size=4
fi
if wget -q -O /tmp/file http://$server:8000/file$size; then
  echo "L2-GOT $(sha256sum /tmp/file | cut -d' ' -f1)"
else
  echo "L2: wget from $server failed"
fi
rm -f /tmp/file
dd if=/dev/urandom of=/srv/back bs=1M count=$size 2>/dev/null
echo "L2-SERVING $(sha256sum /srv/back | cut -d' ' -f1)"
httpd -f -p 8080 -h /srv
L2
chmod +x "$job/l2/init"
(cd "$job/l2" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$job/in/l2.cpio"

# L1's job: an HTTP server on loopback, Petrel with user-mode networking.
cat >"$job/in/job.sh" <<'JOB'
set -u
[ -c /dev/net/tun ] || insmod /job/tun.ko || echo "insmod tun failed"
mkdir -p /tmp/www
for n in 4 100; do dd if=/dev/urandom of=/tmp/www/file$n bs=1M count=$n 2>/dev/null; done
httpd -p 8000 -h /tmp/www
rc=0
# wait_for PATTERN SECONDS: until the guest's console ($log) shows PATTERN,
# while its Petrel ($pid) lives.
wait_for() {
  i=0
  while [ $i -lt $2 ]; do
    grep -q "$1" $log 2>/dev/null && return 0
    kill -0 $pid 2>/dev/null || return 1
    sleep 1; i=$((i+1))
  done
  return 1
}
# run_case NAME SIZE_MIB FETCH_URL PETREL_NET_ARGS...
run_case() {
  name=$1 size=$2 url=$3; shift 3
  log=/tmp/guest-$name.log
  want=$(sha256sum /tmp/www/file$size | cut -d' ' -f1)
  petrel run -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "console=ttyS0 quiet petrelnet=$name" -m 512M -smp 1 \
    -serial file:$log "$@" >/tmp/petrel-$name.log 2>&1 &
  pid=$!
  if [ $name = tap ]; then
    i=0; while [ ! -e /sys/class/net/ptap0 ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
    ip addr add 10.9.0.1/24 dev ptap0 && ip link set ptap0 up
  fi
  if wait_for "L2-GOT\|wget from" 600 && grep -q "L2-GOT $want" $log; then
    echo "PASS $name: the guest fetched $size MiB from L1, sha256 $want"
  else
    echo "FAIL $name: guest fetch (want $want)"; rc=1
  fi
  if wait_for "L2-SERVING" 300; then
    gsum=$(grep -o "L2-SERVING [0-9a-f]*" $log | cut -d' ' -f2)
    sleep 2
    if wget -q -O /tmp/back $url && [ "$(sha256sum /tmp/back | cut -d' ' -f1)" = "$gsum" ]; then
      echo "PASS $name: L1 fetched $size MiB from the guest, sha256 $gsum"
    else
      echo "FAIL $name: fetch from the guest (guest sha256 $gsum)"; rc=1
    fi
    rm -f /tmp/back
  else
    echo "FAIL $name: guest never served"; rc=1
  fi
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  cp $log /tmp/petrel-$name.log $OUT/ 2>/dev/null
  grep "L2" $log | sed "s/^/$name: /"
}
run_case user 4 http://127.0.0.1:18080/back -nic user,hostfwd=tcp:127.0.0.1:18080-:8080
grep -q "L2-PING ok" /tmp/guest-user.log && { echo "FAIL user: ping marker in the wrong run"; rc=1; }
run_case tap 100 http://10.9.0.2:8080/back -netdev tap,id=t0,ifname=ptap0,script=no,downscript=no -device virtio-net-pci,netdev=t0
grep -q "L2-PING ok" /tmp/guest-tap.log && echo "PASS tap: the guest pinged L1" || { echo "FAIL tap: no ping"; rc=1; }

# The hot-plug case: a guest without a NIC gets one over QMP, uses it, and
# loses it again.
log=/tmp/guest-hotplug.log
qmp() { /job/qmpsend -timeout 120s /tmp/qmp.sock "$@" >>/tmp/qmp-hotplug.log 2>&1; }
petrel run -kernel /l2/vmlinuz -initrd /job/l2.cpio -append "console=ttyS0 quiet petrelnet=hotplug" -m 512M -smp 1 \
  -serial file:$log -qmp unix:/tmp/qmp.sock,server,wait=off >/tmp/petrel-hotplug.log 2>&1 &
pid=$!
want=$(sha256sum /tmp/www/file4 | cut -d' ' -f1)
if ! wait_for L2-WAITING-NIC 600; then
  echo "FAIL hotplug: the guest never came up"; rc=1
elif ! qmp '{"execute":"netdev_add","arguments":{"type":"user","id":"u1"}}' \
  '{"execute":"device_add","arguments":{"driver":"virtio-net-pci","id":"nic1","netdev":"u1","mac":"52:54:00:12:34:99"}}'; then
  echo "FAIL hotplug: QMP netdev_add + device_add"; rc=1
elif ! wait_for L2-NIC-UP 300; then
  echo "FAIL hotplug: the guest never saw the NIC"; rc=1
else
  grep -q "L2-NIC-UP 52:54:00:12:34:99" $log && echo "PASS hotplug: Linux found the hot-plugged NIC ($(grep -o 'L2-NIC-UP.*' $log))" ||
    { echo "FAIL hotplug: the guest's NIC has another MAC"; rc=1; }
  if wait_for "L2-GOT\|wget through" 300 && grep -q "L2-GOT $want" $log; then
    echo "PASS hotplug: the guest fetched 4 MiB through the hot-plugged NIC, sha256 $want"
  else
    echo "FAIL hotplug: fetch through the hot-plugged NIC (want $want)"; rc=1
  fi
  if qmp '{"execute":"device_del","arguments":{"id":"nic1"}}' wait:DEVICE_DELETED; then
    echo "PASS hotplug: device_del, DEVICE_DELETED arrived"
  else
    echo "FAIL hotplug: device_del without DEVICE_DELETED"; rc=1
  fi
  if wait_for "L2-NIC-GONE\|still there" 300 && grep -q L2-NIC-GONE $log; then
    echo "PASS hotplug: eth0 is gone from the guest"
  else
    echo "FAIL hotplug: eth0 stayed in the guest"; rc=1
  fi
  qmp '{"execute":"netdev_del","arguments":{"id":"u1"}}' && echo "PASS hotplug: netdev_del" ||
    { echo "FAIL hotplug: netdev_del"; rc=1; }
fi
kill $pid 2>/dev/null; wait $pid 2>/dev/null
cp $log /tmp/petrel-hotplug.log /tmp/qmp-hotplug.log $OUT/ 2>/dev/null
grep "L2" $log | sed "s/^/hotplug: /"
exit $rc
JOB
nested_run "$job" "${NESTED_TIMEOUT:-1500}"
