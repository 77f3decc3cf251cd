#!/bin/busybox sh
# /init of the slow tier's Linux guests (L2), in their initramfs and on their
# ext4 root disk. busybox, pcibar (tools/pcibar) and the kernel's own virtio,
# uio and uio_pci_generic modules sit beside it. petrel.role= on the kernel
# command line picks the scenario; each prints E2E-* lines that the job
# (scripts/e2e-job.sh) waits for and the host checks (scripts/e2e.sh).
#   disks        root=/dev/vda (qcow2), vdb QED, vdc raw, vdd qcow2 overlay;
#                2 vCPUs; data with checksums; hot-plug of a virtio-blk disk
#                and of ivshmem-plain over QMP; reboot -f; the second boot
#                checks the data again and powers off.
#   ivshmem-a/b  two guests on one ivshmem server: A writes a pattern and
#                rings B; B takes the interrupt (uio_pci_generic), checks it,
#                writes its own and rings A back.
#   savevm       a shell loop writes /mnt/fN on an ext4 qcow2 disk and prints
#                SAVEVM-LOOP N once a second up to 20; the host saves it
#                (HMP savevm), kills Petrel and loads it in a new one
#                (-loadvm): the loop must go on from where it was. At 20 it
#                checks every file and reboots; the second boot says
#                SAVEVM-REBOOTED and waits for the host's HMP loadvm.
#   reference    boot, report the kernel log, power off (the same kernel
#                under QEMU-KVM: the excuse for lines L1's emulation causes)
#   shell        the demo: an interactive shell on the console.
export PATH=/bin:/sbin
# busybox's applet links point at /proc/self/exe: mount /proc first.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
grep -q ' /dev ' /proc/mounts || mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }
role=$(arg petrel.role)
say() { echo "E2E-$*"; }
# dump_dmesg: the kernel log's warnings and errors (levels 0-4; the console
# is quiet) and the lines the host checks facts in, as E2E-DMESG lines.
dump_dmesg() {
  dmesg -r | grep -E '^<[0-4]>|BIOS-e820|ACPI: (RSDP|XSDT|FACP|DSDT|FACS|APIC) |Early table checksum|smpboot: (Allowing|Total)|IOAPIC\[0\]|INT_SRC_OVR|acpiphp|pci 0000:00:0[67]|virtio_blk virtio[0-9]+: .*vd|uio_pci_generic' |
    sed 's/^/E2E-DMESG /'
}
die() { say "FAIL $*"; dump_dmesg; sync; poweroff -f; }

if [ -e /etc/initramfs ]; then
  for k in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk uio uio_pci_generic; do
    insmod /lib/petrel/$k.ko || say "FAIL insmod $k"
  done
  if [ "$(arg root)" = /dev/vda ]; then
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
    mount -t ext4 /dev/vda /newroot || die "mounting /dev/vda"
    say "ROOT-MOUNTED $(grep ' /newroot ' /proc/mounts)"
    umount /tmp /sys /proc
    mount --move /dev /newroot/dev
    exec switch_root /newroot /init
  fi
fi

# wait_for COMMAND: evaluates COMMAND every second until it succeeds, for up
# to 90 s.
wait_for() {
  i=0
  while ! eval "$1" >/dev/null 2>&1; do
    [ $i -ge 90 ] && return 1
    sleep 1
    i=$((i + 1))
  done
}

# region_sum DEV OFFSET_MIB: the sha256 of 1 MiB of DEV at OFFSET_MIB.
region_sum() { dd if=$1 bs=1M skip=$2 count=1 2>/dev/null | sha256sum | cut -d' ' -f1; }

disks_first_boot() {
  say "CPUS online=$(cat /sys/devices/system/cpu/online) nproc=$(nproc)"
  mkdir -p /data
  dd if=/dev/urandom of=/data/blob bs=64k count=16 2>/dev/null
  echo "written by the slow tier's guest on its qcow2 root" >/data/note
  (cd /data && sha256sum blob note >/data/SUMS)
  while read -r sum name; do say "ROOTFILE $name $sum"; done </data/SUMS
  for d in vdb vdc vdd; do
    [ -b /dev/$d ] || die "/dev/$d missing"
    # The first MiB of each data disk holds the host's marker; 1 MiB of
    # fresh data goes at 2 MiB.
    say "MARKER $d $(dd if=/dev/$d bs=64 count=1 2>/dev/null | tr -d '\0')"
    dd if=/dev/urandom of=/dev/$d bs=1M seek=2 count=1 conv=fsync 2>/dev/null || die "writing /dev/$d"
    say "WROTE $d 2 $(region_sum /dev/$d 2)"
  done
  sync

  # Hot-plug of a virtio-blk disk in slot 6, then its removal.
  dev=/sys/bus/pci/devices/0000:00:06.0
  say "HOTPLUG-BLK-WAIT"
  wait_for 'ls -d $dev/virtio*/block' || die "no hot-plugged disk in slot 6"
  blk=$(ls $dev/virtio*/block)
  wait_for 'test -b /dev/$blk' || die "no /dev/$blk"
  say "HOTPLUG-BLK-SEEN $blk slot=$(cat /sys/bus/pci/slots/6/address 2>/dev/null)"
  say "HOTPLUG-BLK-READ $(dd if=/dev/$blk bs=64 count=1 2>/dev/null | tr -d '\0')"
  say "UNPLUG-BLK-WAIT"
  wait_for '! test -e $dev' || die "slot 6 still present after device_del"
  say "UNPLUG-BLK-OK"

  # Hot-plug of ivshmem-plain in slot 7: read the host's marker from BAR2,
  # answer next to it, then the removal.
  dev=/sys/bus/pci/devices/0000:00:07.0
  say "HOTPLUG-SHM-WAIT"
  wait_for 'test -e $dev/resource2' || die "no hot-plugged ivshmem in slot 7"
  say "HOTPLUG-SHM-SEEN $(cat $dev/vendor):$(cat $dev/device)"
  say "HOTPLUG-SHM-READ $(pcibar $dev/resource2 read 0 64)"
  pcibar $dev/resource2 write 0x1000 "answered by the guest through BAR2" || die "writing BAR2"
  say "UNPLUG-SHM-WAIT"
  wait_for '! test -e $dev' || die "slot 7 still present after device_del"
  say "UNPLUG-SHM-OK"

  echo 1 >/data/boot1-done
  sync
  dump_dmesg
  say "REBOOTING"
  reboot -f
}

disks_second_boot() {
  say "SECOND-BOOT"
  (cd /data && sha256sum -c SUMS) || die "root files changed across the reboot"
  say "ROOTFILES-OK"
  echo 2 >/data/boot2-done
  sync
  dump_dmesg
  say "POWEROFF"
  poweroff -f
}

# ivshmem: BAR0 registers (IntrMask 0, IntrStatus 4, IVPosition 8,
# Doorbell 12); the shared memory holds at 0x0 A's ID, at 0x8 B's ID + 1
# once B is ready, the 64 KiB patterns at 64 KiB (A's) and 128 KiB (B's).
ivshmem_peer() {
  dev=$(grep -l 0x1110 /sys/bus/pci/devices/*/device | head -n1)
  dev=${dev%/device}
  [ -n "$dev" ] || die "no ivshmem device"
  echo "1af4 1110" >/sys/bus/pci/drivers/uio_pci_generic/new_id
  wait_for 'test -e /dev/uio0' || die "uio_pci_generic did not bind"
  r0=$dev/resource0 r2=$dev/resource2 cfg=$dev/config
  me=$(($(pcibar $r0 r32 8)))
  say "IVSHMEM $role id=$me irq=$(cat $dev/irq)"
  pcibar $r0 w32 0 1 # IntrMask: vector 0 raises INTx
  if [ "$role" = ivshmem-b ]; then
    # Ready (ID + 1 at 0x8) only once the uio device is open.
    pcibar /dev/uio0 wait 120 $cfg $r2 8 $((me + 1)) || die "B: no doorbell from A"
    say "B-IRQ status=$(pcibar $r0 r32 4)" # IntrStatus: reading clears it
    pcibar $r2 check 0x10000 0x10000 0xa11ce || die "B: A's pattern"
    say "B-GOT-PATTERN"
    pcibar $r2 fill 0x20000 0x10000 0xb0b
    peer=$(($(pcibar $r2 r32 0)))
    pcibar $r0 w32 12 $((peer << 16))
    say "B-RANG $peer"
  else
    i=0
    while [ "$(($(pcibar $r2 r32 8)))" = 0 ]; do
      [ $i -ge 120 ] && die "A: B never got ready"
      sleep 1
      i=$((i + 1))
    done
    peer=$(($(pcibar $r2 r32 8) - 1))
    pcibar $r2 w32 0 $me
    pcibar $r2 fill 0x10000 0x10000 0xa11ce
    say "A-RINGING $peer"
    pcibar /dev/uio0 wait 120 $cfg $r0 12 $((peer << 16)) || die "A: no doorbell back from B"
    say "A-IRQ status=$(pcibar $r0 r32 4)"
    pcibar $r2 check 0x20000 0x10000 0xb0b || die "A: B's pattern"
    say "A-GOT-PATTERN"
  fi
  dump_dmesg
  say "POWEROFF"
  poweroff -f
}

savevm_loop() {
  wait_for 'test -b /dev/vda' || die "no /dev/vda"
  mount -t ext4 /dev/vda /mnt || die "mounting /dev/vda"
  if [ -e /mnt/done ]; then
    say "SAVEVM-REBOOTED files=$(ls /mnt | grep -c '^f')"
    while :; do sleep 1; done
  fi
  i=0
  while [ $i -lt 20 ]; do
    i=$((i + 1))
    echo "file $i of the savevm loop" >/mnt/f$i
    sync
    say "SAVEVM-LOOP $i"
    sleep 1
  done
  j=1
  while [ $j -le 20 ]; do
    [ "$(cat /mnt/f$j)" = "file $j of the savevm loop" ] || die "/mnt/f$j: $(cat /mnt/f$j)"
    j=$((j + 1))
  done
  say "SAVEVM-FILES-OK"
  touch /mnt/done
  umount /mnt
  sync
  reboot -f
}

# shell_network: the demo's NIC (Petrel's virtio-net on user-mode
# networking, -nic user) gets its address by DHCP; 10.0.2.2 is the host.
shell_network() {
  for k in failover net_failover virtio_net; do insmod /lib/petrel/$k.ko 2>/dev/null; done
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 10 ]; do sleep 1; i=$((i + 1)); done
  [ -e /sys/class/net/eth0 ] || { echo "(no network: eth0 did not appear)"; return; }
  cat >/tmp/dhcp.sh <<'S'
#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add $ip/${mask:-24} dev $interface
ip route add default via $router dev $interface
S
  chmod +x /tmp/dhcp.sh
  ip link set lo up
  ip link set eth0 up
  udhcpc -i eth0 -s /tmp/dhcp.sh -q -n -t 5 >/dev/null 2>&1 || echo "(no network: no DHCP lease)"
  [ -z "$(ip -4 addr show eth0 | grep inet)" ] || echo "network: eth0 has $(ip -4 -o addr show eth0 | awk '{print $4}') by DHCP; the host is 10.0.2.2 (Petrel's user-mode network)"
}

case $role in
savevm) savevm_loop ;;
disks)
  if [ -e /data/boot1-done ]; then disks_second_boot; else disks_first_boot; fi
  ;;
ivshmem-a | ivshmem-b) ivshmem_peer ;;
reference)
  dump_dmesg
  say "POWEROFF"
  poweroff -f
  ;;
shell)
  shell_network
  echo
  echo "Linux $(uname -r) is running on Petrel with $(nproc) vCPUs; /dev/vda is the qcow2 disk."
  echo "Try: ls /dev/vda; cat /proc/cpuinfo; ip addr; wget -O - http://10.0.2.2:$(arg petrel.httpport)/; dmesg | tail. Leave with: poweroff -f"
  if [ -n "$(arg petrel.noninteractive)" ]; then
    # No one to type: the shell's prompt, three commands, and power-off.
    printf 'ls -l /dev/vda\ngrep -m1 "model name" /proc/cpuinfo\nwget -q -O - http://10.0.2.2:%s/\n' "$(arg petrel.httpport)" |
      (cd / && sh -i 2>&1)
    echo
    echo "(non-interactive demo: powering off)"
    # Down first: Debian's 6.1 breaks virtio devices at shutdown ("virtio:
    # break and reset virtio devices on device_shutdown()"), so an IPv6
    # link-up landing then fails its receive-mode commands, loudly.
    ip link set eth0 down 2>/dev/null
    poweroff -f
  fi
  setsid cttyhack sh -l
  poweroff -f
  ;;
*) die "unknown petrel.role '$role'" ;;
esac
