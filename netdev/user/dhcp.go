package user

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

const (
	dhcpServerPort = 67
	dhcpClientPort = 68
	// leaseTime is what the server grants (slirp's 24 hours). Leases are
	// not reclaimed when they run out: a client keeps its address for the
	// network's life, so a guest that reboots gets the same one.
	leaseTime = 24 * time.Hour
	// maxLeases bounds the pool, so that a guest inventing MAC addresses
	// costs a bounded table.
	maxLeases = 256
)

// dhcpServer is the network's DHCP server (RFC 2131), at the gateway. It
// sits on the link before the stack: a client without an address cannot
// be answered through the stack's routing, so requests are taken out of
// the frame stream and replies built here whole.
type dhcpServer struct {
	net     netip.Prefix
	gateway netip.Addr
	mac     [6]byte
	// pool is the addresses handed out: from host .15 up, at most
	// maxLeases, never the network's broadcast address.
	first netip.Addr
	size  int

	mu      sync.Mutex
	leases  map[[6]byte]netip.Addr // client hardware address -> address
	holders map[netip.Addr][6]byte
}

func newDHCPServer(n netip.Prefix, gateway netip.Addr, mac [6]byte) *dhcpServer {
	hosts := 1 << (32 - n.Bits())
	size := min(hosts-1-firstLease, maxLeases) // host numbers .15 .. hosts-2
	return &dhcpServer{net: n, gateway: gateway, mac: mac, first: hostAddr(n, firstLease), size: size,
		leases: map[[6]byte]netip.Addr{}, holders: map[netip.Addr][6]byte{}}
}

// handleFrame takes a guest frame; if it is a DHCP request (IPv4, UDP to
// port 67) it returns true and the reply frame, nil for none. The frame
// is untrusted: anything malformed is dropped (true, nil) or, not being
// DHCP, left to the stack (false).
func (d *dhcpServer) handleFrame(frame []byte) (bool, []byte) {
	const ipStart = header.EthernetMinimumSize
	if len(frame) < ipStart+header.IPv4MinimumSize+header.UDPMinimumSize ||
		binary.BigEndian.Uint16(frame[12:]) != uint16(header.IPv4ProtocolNumber) {
		return false, nil
	}
	ip := header.IPv4(frame[ipStart:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.UDPProtocolNumber || ip.More() || ip.FragmentOffset() != 0 {
		return false, nil
	}
	udp := header.UDP(ip.Payload())
	if len(udp) < header.UDPMinimumSize || udp.DestinationPort() != dhcpServerPort {
		return false, nil
	}
	dst := netip.AddrFrom4(ip.DestinationAddress().As4())
	if dst != netip.AddrFrom4([4]byte{255, 255, 255, 255}) && dst != d.gateway {
		return false, nil // not to this server: NAT's (and refused there)
	}
	if !ip.IsChecksumValid() || int(udp.Length()) < header.UDPMinimumSize || int(udp.Length()) > len(udp) {
		return true, nil
	}
	req, err := dhcpv4.FromBytes(udp[header.UDPMinimumSize:udp.Length()])
	if err != nil {
		return true, nil
	}
	reply, to := d.reply(req)
	if reply == nil {
		return true, nil
	}
	return true, d.frame(reply, to)
}

// reply answers one request (RFC 2131 4.3); nil for no answer. to is
// where the reply goes, by RFC 2131 4.1: ciaddr when the client has one,
// else broadcast when the client asks for it or for a DHCPNAK, else yiaddr
// at the client's hardware address.
func (d *dhcpServer) reply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, netip.Addr) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, netip.Addr{}
	}
	client := [6]byte(req.ClientHWAddr)
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(d.gateway.AsSlice())) {
		return nil, netip.Addr{} // the client chose another server (4.3.2)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var typ dhcpv4.MessageType
	var yiaddr netip.Addr
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		yiaddr = d.lease(client)
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// The address asked for: option 50 in SELECTING and INIT-REBOOT,
		// ciaddr in RENEWING and REBINDING (4.3.2).
		want, _ := netip.AddrFromSlice(req.RequestedIPAddress().To4())
		if !want.IsValid() {
			want, _ = netip.AddrFromSlice(req.ClientIPAddr.To4())
		}
		yiaddr = d.lease(client)
		typ = dhcpv4.MessageTypeAck
		if want != yiaddr {
			typ, yiaddr = dhcpv4.MessageTypeNak, netip.Addr{}
		}
	case dhcpv4.MessageTypeInform:
		typ = dhcpv4.MessageTypeAck // configuration only, no lease (4.3.5)
	case dhcpv4.MessageTypeRelease:
		if a, ok := d.leases[client]; ok && net.IP(a.AsSlice()).Equal(req.ClientIPAddr) {
			delete(d.leases, client)
			delete(d.holders, a)
		}
		return nil, netip.Addr{}
	default: // DHCPDECLINE, and replies a guest has no business sending
		return nil, netip.Addr{}
	}
	if typ != dhcpv4.MessageTypeNak && req.MessageType() != dhcpv4.MessageTypeInform && !yiaddr.IsValid() {
		return nil, netip.Addr{} // pool exhausted
	}
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(d.gateway.AsSlice())))}
	if typ != dhcpv4.MessageTypeNak {
		gw := net.IP(d.gateway.AsSlice())
		mtuOpt := binary.BigEndian.AppendUint16(nil, mtu)
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(d.net.Bits(), 32))),
			dhcpv4.WithOption(dhcpv4.OptRouter(gw)),
			dhcpv4.WithOption(dhcpv4.OptDNS(gw)),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, mtuOpt)))
	}
	if yiaddr.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(net.IP(yiaddr.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(leaseTime)))
	}
	reply, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, netip.Addr{}
	}
	ciaddr, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
	switch {
	case ciaddr.IsValid() && !ciaddr.IsUnspecified() && typ != dhcpv4.MessageTypeNak:
		return reply, ciaddr
	case req.IsBroadcast() || typ == dhcpv4.MessageTypeNak || req.MessageType() == dhcpv4.MessageTypeInform:
		return reply, netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return reply, yiaddr
}

// lease is client's address, given now if it has none; invalid when the
// pool is exhausted. Called with mu held.
func (d *dhcpServer) lease(client [6]byte) netip.Addr {
	if a, ok := d.leases[client]; ok {
		return a
	}
	for i := range d.size {
		a := hostAddr(d.net, firstLease+i)
		if _, taken := d.holders[a]; !taken {
			d.leases[client], d.holders[a] = a, client
			return a
		}
	}
	return netip.Addr{}
}

// frame wraps a reply in UDP, IPv4 and Ethernet headers from the gateway
// to the client's hardware address (or broadcast) and address to.
func (d *dhcpServer) frame(reply *dhcpv4.DHCPv4, to netip.Addr) []byte {
	payload := reply.ToBytes()
	dstMAC := tcpip.LinkAddress(reply.ClientHWAddr)
	if to == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		dstMAC = header.EthernetBroadcastAddress
	}
	const ipStart = header.EthernetMinimumSize
	const udpStart = ipStart + header.IPv4MinimumSize
	b := make([]byte, udpStart+header.UDPMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(d.mac[:]), DstAddr: dstMAC,
		Type: header.IPv4ProtocolNumber})
	src, dst := tcpip.AddrFrom4(d.gateway.As4()), tcpip.AddrFrom4(to.As4())
	ip := header.IPv4(b[ipStart:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b) - ipStart), TTL: 64,
		Protocol: uint8(header.UDPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	udp := header.UDP(b[udpStart:])
	udpLen := uint16(header.UDPMinimumSize + len(payload))
	udp.Encode(&header.UDPFields{SrcPort: dhcpServerPort, DstPort: dhcpClientPort, Length: udpLen})
	copy(udp.Payload(), payload)
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, udpLen)
	udp.SetChecksum(^udp.CalculateChecksum(checksum.Checksum(payload, sum)))
	return b
}
