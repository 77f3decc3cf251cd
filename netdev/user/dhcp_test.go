package user

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/petrel-vmm/petrel/netdev/nettest"
)

func testDHCPServer() *dhcpServer {
	n := netip.MustParsePrefix(DefaultNet)
	return newDHCPServer(n, hostAddr(n, gatewayHost), gatewayMAC)
}

func discover(t *testing.T, mac [6]byte, broadcast bool) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(net.HardwareAddr(mac[:]), dhcpv4.WithBroadcast(broadcast))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Replies go where RFC 2131 4.1 says, and leases are one per client.
func TestDHCPAddressing(t *testing.T) {
	d := testDHCPServer()
	a, b := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}

	offer, to := d.reply(discover(t, a, false))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 0, 2, 15)) || to.String() != "10.0.2.15" {
		t.Fatalf("offer %v %v to %v", offer.MessageType(), offer.YourIPAddr, to)
	}
	if mtuOpt := offer.Options.Get(dhcpv4.OptionInterfaceMTU); len(mtuOpt) != 2 || int(mtuOpt[0])<<8|int(mtuOpt[1]) != mtu {
		t.Errorf("MTU option % x", mtuOpt)
	}
	if lt := offer.IPAddressLeaseTime(0); lt != leaseTime {
		t.Errorf("lease time %v", lt)
	}
	offerB, to := d.reply(discover(t, b, true))
	if !offerB.YourIPAddr.Equal(net.IPv4(10, 0, 2, 16)) || to.String() != "255.255.255.255" {
		t.Fatalf("second client: %v to %v", offerB.YourIPAddr, to)
	}

	// A request for another address than the client's lease: NAK,
	// broadcast.
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 2, 99)))
	if nak, to := d.reply(req); nak.MessageType() != dhcpv4.MessageTypeNak || to.String() != "255.255.255.255" {
		t.Fatalf("wrong address: %v to %v", nak.MessageType(), to)
	}
	// The right one: ACK. Renewing (ciaddr set): ACK to ciaddr.
	req, _ = dhcpv4.NewRequestFromOffer(offer)
	if ack, _ := d.reply(req); ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("request: %v", ack.MessageType())
	}
	renew, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(net.HardwareAddr(a[:])),
		dhcpv4.WithClientIP(net.IPv4(10, 0, 2, 15)))
	if ack, to := d.reply(renew); ack.MessageType() != dhcpv4.MessageTypeAck || to.String() != "10.0.2.15" {
		t.Fatalf("renew: %v to %v", ack.MessageType(), to)
	}
	// A request naming another server is not for this one.
	req, _ = dhcpv4.NewRequestFromOffer(offer)
	req.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 3)))
	if r, _ := d.reply(req); r != nil {
		t.Fatalf("answered a request for another server: %v", r.MessageType())
	}
	// INFORM: configuration, no address.
	inform, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithHwAddr(net.HardwareAddr(b[:])),
		dhcpv4.WithClientIP(net.IPv4(10, 0, 2, 77)))
	if ack, to := d.reply(inform); ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.IsUnspecified() ||
		to.String() != "10.0.2.77" || !ack.Router()[0].Equal(net.IPv4(10, 0, 2, 2)) {
		t.Fatalf("inform: %v yiaddr %v to %v", ack.MessageType(), ack.YourIPAddr, to)
	}
	// RELEASE frees .15 for the next client.
	rel, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(net.HardwareAddr(a[:])),
		dhcpv4.WithClientIP(net.IPv4(10, 0, 2, 15)))
	if r, _ := d.reply(rel); r != nil {
		t.Fatal("answered a release")
	}
	if o, _ := d.reply(discover(t, [6]byte{2, 0, 0, 0, 0, 3}, false)); !o.YourIPAddr.Equal(net.IPv4(10, 0, 2, 15)) {
		t.Fatalf("after release: %v", o.YourIPAddr)
	}
}

// The pool ends below the broadcast address: a /24 has .15 to .254.
func TestDHCPPoolExhausted(t *testing.T) {
	d := testDHCPServer()
	var last net.IP
	for i := range 240 {
		o, _ := d.reply(discover(t, [6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)}, false))
		if o == nil {
			t.Fatalf("no offer for client %d", i)
		}
		last = o.YourIPAddr
	}
	if !last.Equal(net.IPv4(10, 0, 2, 254)) {
		t.Errorf("last address %v", last)
	}
	if o, _ := d.reply(discover(t, [6]byte{2, 0, 0, 0, 9, 9}, false)); o != nil {
		t.Fatalf("offered %v from an exhausted pool", o.YourIPAddr)
	}
}

// The reply frame: from the gateway's MAC and address to the client's
// hardware address and yiaddr, checksums right, the payload the reply.
func TestDHCPReplyFrame(t *testing.T) {
	d := testDHCPServer()
	disc := discover(t, guestMAC, false)
	udp := nettest.UDP(netip.MustParseAddrPort("0.0.0.0:68"), netip.MustParseAddrPort("255.255.255.255:67"), disc.ToBytes(), false)
	ip := nettest.IPv4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), nettest.ProtoUDP, 1, udp)
	frame := nettest.Ethernet([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, guestMAC, nettest.EtherIPv4, ip)
	isDHCP, reply := d.handleFrame(frame)
	if !isDHCP || reply == nil {
		t.Fatalf("DHCP %v, reply %d bytes", isDHCP, len(reply))
	}
	if [6]byte(reply[0:6]) != guestMAC || [6]byte(reply[6:12]) != gatewayMAC {
		t.Errorf("Ethernet % x -> % x", reply[6:12], reply[0:6])
	}
	p, ok := nettest.ParseIPv4(reply)
	if !ok || p.Src.String() != "10.0.2.2" || p.Dst.String() != "10.0.2.15" || p.Proto != nettest.ProtoUDP {
		t.Fatalf("IPv4 %v -> %v proto %d", p.Src, p.Dst, p.Proto)
	}
	if nettest.Checksum(0, reply[14:34]) != 0 {
		t.Error("IPv4 header checksum")
	}
	if nettest.Checksum(nettest.PseudoSum(p.Src, p.Dst, nettest.ProtoUDP, len(p.Payload)), p.Payload) != 0 {
		t.Error("UDP checksum")
	}
	if o, err := dhcpv4.FromBytes(p.Payload[8:]); err != nil || o.TransactionID != disc.TransactionID {
		t.Fatalf("payload: %v", err)
	}
	// Corrupt the IP header: dropped, still not the stack's.
	frame[14+8]++
	if isDHCP, reply := d.handleFrame(frame); !isDHCP || reply != nil {
		t.Errorf("bad checksum: DHCP %v, reply %d bytes", isDHCP, len(reply))
	}
	// UDP to port 67 of another host is the NAT's.
	other := nettest.Ethernet(gatewayMAC, guestMAC, nettest.EtherIPv4, nettest.IPv4(netip.MustParseAddr("10.0.2.15"),
		netip.MustParseAddr("192.0.2.1"), nettest.ProtoUDP, 1, udp))
	if isDHCP, _ := d.handleFrame(other); isDHCP {
		t.Error("took a datagram to another host's port 67")
	}
}
