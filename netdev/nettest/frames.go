// Package nettest builds and parses the Ethernet, ARP, IPv4, UDP and TCP
// frames that tests of network backends exchange as a guest would.
package nettest

import (
	"encoding/binary"
	"net/netip"
)

// Ethernet types.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
)

// IP protocols.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Ethernet prepends an Ethernet header.
func Ethernet(dst, src [6]byte, typ uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f, dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], typ)
	return append(f, payload...)
}

// Checksum is the Internet checksum (RFC 1071) of b with initial sum: the
// one's complement of the folded one's-complement sum of big-endian 16-bit
// words, an odd last byte padded with zero. sum is an unfolded partial sum,
// such as PseudoSum's.
func Checksum(sum uint32, b []byte) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// PseudoSum is the unfolded sum of the IPv4 pseudo-header (RFC 793 §3.1,
// RFC 768): source, destination, protocol and the transport length in
// bytes (header and data).
func PseudoSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	sum += uint32(binary.BigEndian.Uint16(s[0:])) + uint32(binary.BigEndian.Uint16(s[2:]))
	sum += uint32(binary.BigEndian.Uint16(d[0:])) + uint32(binary.BigEndian.Uint16(d[2:]))
	return sum + uint32(proto) + uint32(length)
}

// IPv4 prepends an IPv4 header (no options, DF, TTL 64) with its checksum.
func IPv4(src, dst netip.Addr, proto uint8, id uint16, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], id)
	h[6] = 0x40
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], Checksum(0, h))
	return append(h, payload...)
}

// UDP returns a UDP datagram with its checksum (or with only the
// pseudo-header sum, as a NEEDS_CSUM sender leaves it, when partial).
func UDP(src, dst netip.AddrPort, payload []byte, partial bool) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	u = append(u, payload...)
	ps := PseudoSum(src.Addr(), dst.Addr(), ProtoUDP, len(u))
	if partial {
		// The folded pseudo-header sum, not complemented: what a sender
		// using VIRTIO_NET_HDR_F_NEEDS_CSUM leaves for the other end to
		// complete (virtio 1.2, 5.1.6.2 "Packet Transmission").
		binary.BigEndian.PutUint16(u[6:], ^Checksum(ps, nil))
	} else {
		c := Checksum(ps, u)
		// RFC 768: a computed 0 is sent as 0xffff, 0 meaning "no
		// checksum".
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
	}
	return u
}

// ARPReply answers an ARP request frame for ip with mac, or returns nil
// when req is not a request for ip.
func ARPReply(req []byte, ip netip.Addr, mac [6]byte) []byte {
	if len(req) < 42 || binary.BigEndian.Uint16(req[12:]) != EtherARP {
		return nil
	}
	// ARP for IPv4 over Ethernet (RFC 826), 28 bytes: htype, ptype,
	// hlen, plen, op (1 request, 2 reply) at 6, sender MAC at 8, sender IP
	// at 14, target MAC at 18, target IP at 24.
	a := req[14:]
	want := ip.As4()
	if binary.BigEndian.Uint16(a[6:]) != 1 || [4]byte(a[24:28]) != want {
		return nil
	}
	r := make([]byte, 28)
	copy(r, a[:6]) // htype, ptype, hlen, plen
	binary.BigEndian.PutUint16(r[6:], 2)
	copy(r[8:], mac[:])
	copy(r[14:], want[:])
	copy(r[18:], a[8:14])  // requester MAC
	copy(r[24:], a[14:18]) // requester IP
	return Ethernet([6]byte(a[8:14]), mac, EtherARP, r)
}

// ARPRequest asks who has target.
func ARPRequest(mac [6]byte, ip, target netip.Addr) []byte {
	r := make([]byte, 28)
	binary.BigEndian.PutUint16(r[0:], 1)
	binary.BigEndian.PutUint16(r[2:], EtherIPv4)
	r[4], r[5] = 6, 4
	binary.BigEndian.PutUint16(r[6:], 1)
	copy(r[8:], mac[:])
	s, t := ip.As4(), target.As4()
	copy(r[14:], s[:])
	copy(r[24:], t[:])
	return Ethernet([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, EtherARP, r)
}

// IPv4Packet is an IPv4 packet as ParseIPv4 splits it: the header fields
// tests need and the transport payload.
type IPv4Packet struct {
	Src, Dst netip.Addr
	// Proto is the IP protocol number (ProtoTCP, ProtoUDP, ...).
	Proto uint8
	// Payload is the transport header and data, aliasing the frame; it
	// ends at the IP total length, so Ethernet padding is left out.
	Payload []byte
}

// ParseIPv4 parses frame as Ethernet + IPv4; ok is false for anything else
// (another EtherType, a bad version or IHL, a total length past the frame).
// The header checksum is not verified.
func ParseIPv4(frame []byte) (IPv4Packet, bool) {
	if len(frame) < 34 || binary.BigEndian.Uint16(frame[12:]) != EtherIPv4 {
		return IPv4Packet{}, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < 20 || total < ihl || total > len(ip) {
		return IPv4Packet{}, false
	}
	return IPv4Packet{Src: netip.AddrFrom4([4]byte(ip[12:16])), Dst: netip.AddrFrom4([4]byte(ip[16:20])),
		Proto: ip[9], Payload: ip[ihl:total]}, true
}
