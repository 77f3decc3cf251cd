package user

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/petrel-vmm/petrel/netdev/nettest"
)

// FuzzGuestFrame feeds arbitrary frames from the guest to the network, as
// the link's reader does: DHCP at the link, the rest through the stack and
// its NAT forwarders. No host socket is opened (the dial hook refuses,
// which answers SYNs with resets). A frame must not panic or hang, and
// the DHCP table stays within its bound.
func FuzzGuestFrame(f *testing.F) {
	refuse := func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("fuzzing: no host sockets")
	}
	u, err := Open(Config{ID: "fuzz", dial: refuse})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { u.Close() })
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > u.MaxFrame() {
			frame = frame[:u.MaxFrame()] // the socket truncates longer messages
		}
		u.fromGuest(frame)
		u.dhcp.mu.Lock()
		n := len(u.dhcp.leases)
		u.dhcp.mu.Unlock()
		if n > maxLeases {
			t.Fatalf("%d DHCP leases", n)
		}
	})
}

// TestWriteFuzzSeeds writes testdata/fuzz/FuzzGuestFrame (see
// testdata/README) when PETREL_WRITE_FUZZ_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PETREL_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set PETREL_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzGuestFrame")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, frame := range seedFrames(t) {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", frame)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// seedFrames are one frame of each kind the network handles, and a few
// broken ones.
func seedFrames(t *testing.T) map[string][]byte {
	me, gw := netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("10.0.2.2")
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ipFrame := func(src, dst netip.Addr, proto uint8, payload []byte) []byte {
		return nettest.Ethernet(gatewayMAC, guestMAC, nettest.EtherIPv4, nettest.IPv4(src, dst, proto, 1, payload))
	}
	disc, err := dhcpv4.NewDiscovery(guestMAC[:])
	if err != nil {
		t.Fatal(err)
	}
	dhcpFrame := func(m *dhcpv4.DHCPv4) []byte {
		udp := nettest.UDP(netip.MustParseAddrPort("0.0.0.0:68"), netip.MustParseAddrPort("255.255.255.255:67"), m.ToBytes(), false)
		return nettest.Ethernet(bcast, guestMAC, nettest.EtherIPv4,
			nettest.IPv4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), nettest.ProtoUDP, 1, udp))
	}
	req, err := dhcpv4.NewRequestFromOffer(&dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootReply, TransactionID: disc.TransactionID,
		ClientHWAddr: guestMAC[:], YourIPAddr: net.IPv4(10, 0, 2, 15),
		Options: dhcpv4.OptionsFromList(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer), dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2)))})
	if err != nil {
		t.Fatal(err)
	}
	echo := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'x'}
	binary.BigEndian.PutUint16(echo[2:], nettest.Checksum(0, echo))
	dnsQuery := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1}
	frag := ipFrame(me, netip.MustParseAddr("192.0.2.1"), nettest.ProtoUDP,
		nettest.UDP(netip.AddrPortFrom(me, 5000), netip.MustParseAddrPort("192.0.2.1:9"), make([]byte, 64), false))
	frag[14+6] |= 0x20 // more fragments
	return map[string][]byte{
		"dhcp-discover": dhcpFrame(disc),
		"dhcp-request":  dhcpFrame(req),
		"arp-request":   nettest.ARPRequest(guestMAC, me, gw),
		"icmp-echo":     ipFrame(me, gw, 1, echo),
		"tcp-syn":       ipFrame(me, gw, nettest.ProtoTCP, tcpSYN(me, gw, 40000, 80)),
		"tcp-syn-out":   ipFrame(me, netip.MustParseAddr("192.0.2.1"), nettest.ProtoTCP, tcpSYN(me, netip.MustParseAddr("192.0.2.1"), 40001, 443)),
		"udp-dns":       ipFrame(me, gw, nettest.ProtoUDP, nettest.UDP(netip.AddrPortFrom(me, 5353), netip.AddrPortFrom(gw, 53), dnsQuery, false)),
		"udp-fragment":  frag,
		"short":         nettest.Ethernet(gatewayMAC, guestMAC, nettest.EtherIPv4, []byte{0x45, 0}),
		"runt":          {1, 2, 3},
	}
}

// tcpSYN is a TCP header (RFC 793 3.1) with SYN set and no options.
func tcpSYN(src, dst netip.Addr, sport, dport uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 1000)
	h[12] = 5 << 4
	h[13] = 0x02
	binary.BigEndian.PutUint16(h[14:], 65535)
	binary.BigEndian.PutUint16(h[16:], nettest.Checksum(nettest.PseudoSum(src, dst, nettest.ProtoTCP, len(h)), h))
	return h
}
