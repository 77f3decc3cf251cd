package net

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/petrel-vmm/petrel/netdev/nettest"
	"github.com/petrel-vmm/petrel/netdev/user"
)

// The whole path with the user-mode backend: a DHCP discover sent through
// the transmit queue reaches the stack, its offer comes back through the
// receive queue into the guest's buffers, with the address slirp gives.
func TestUserModeDHCPThroughQueues(t *testing.T) {
	u, err := user.Open(user.Config{ID: "n0"})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	r := newRigOn(t, u, linuxFeatures)
	r.postRx(16, 2048, 0)
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(testMAC[:]))
	if err != nil {
		t.Fatal(err)
	}
	udp := nettest.UDP(netip.MustParseAddrPort("0.0.0.0:68"), netip.MustParseAddrPort("255.255.255.255:67"), disc.ToBytes(), false)
	ip := nettest.IPv4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), nettest.ProtoUDP, 1, udp)
	r.transmit(Hdr{}, nettest.Ethernet([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, testMAC, nettest.EtherIPv4, ip), 2)
	for range 16 {
		_, data := r.usedFrame(2048)
		p, ok := nettest.ParseIPv4(data)
		if !ok || p.Proto != nettest.ProtoUDP || len(p.Payload) < 8 {
			continue // the stack's ARP and the like
		}
		offer, err := dhcpv4.FromBytes(p.Payload[8:])
		if err != nil {
			t.Fatal(err)
		}
		if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 0, 2, 15)) {
			t.Fatalf("reply %v offering %v", offer.MessageType(), offer.YourIPAddr)
		}
		if st := u.Stats(); st.TxFrames.Load() != 1 || st.RxFrames.Load() == 0 {
			t.Fatalf("backend counted %d sent, %d received", st.TxFrames.Load(), st.RxFrames.Load())
		}
		return
	}
	t.Fatal("no DHCP offer among 16 frames")
}
