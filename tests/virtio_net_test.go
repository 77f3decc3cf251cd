//go:build amd64

package tests

import (
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestVirtioNetUserDHCP: a guest driver (tests/guest/progs/virtio_net.c)
// on virtio-net-pci over -netdev user reads its MAC and MTU from the
// device, transmits a DHCP DISCOVER and receives the user-mode stack's
// OFFER through its receive buffers, with the IPv4 and UDP checksums
// verified in the guest. The offer is slirp's: 10.0.2.15, router
// 10.0.2.2, and the stack's MTU, which the device also offers with
// VIRTIO_NET_F_MTU.
func TestVirtioNetUserDHCP(t *testing.T) {
	elf := guest.Build(t, "virtio_net.c")
	nd, err := qemuopt.ParseNetdev("user,id=n0")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := qemuopt.ParseDevice("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:77")
	if err != nil {
		t.Fatal(err)
	}
	r := runGuest(t, elf, pc.Config{Netdevs: []qemuopt.NetdevSpec{nd}, Devices: []qemuopt.DeviceSpec{dev}})
	mustPass(t, r)
	for _, want := range []string{
		"NET mac=52:54:00:12:34:77 mtu=65520",
		"OFFER type=2 yiaddr=10.0.2.15 router=10.0.2.2 mask=ffffff00 mtu=65520",
	} {
		if !strings.Contains(r.Serial, want) {
			t.Errorf("guest console lacks %q:\n%s", want, r.Serial)
		}
	}
}
