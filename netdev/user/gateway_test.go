package user

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/netdev/nettest"
)

// The gateway answers ARP with slirp's MAC and ping (ICMP echo, RFC 792)
// from that MAC, resolving the guest by ARP first.
func TestGatewayARPAndPing(t *testing.T) {
	u, err := Open(Config{ID: "n0"})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	g := &guest{u: u, frames: make(chan []byte, 64)}
	u.Attach(g)
	me, gw := netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("10.0.2.2")

	u.Send([][]byte{nettest.ARPRequest(guestMAC, me, gw)})
	f := next(t, g, func(f []byte) bool { return binary.BigEndian.Uint16(f[12:]) == nettest.EtherARP })
	if [6]byte(f[6:12]) != gatewayMAC || [6]byte(f[14+8:14+14]) != gatewayMAC || binary.BigEndian.Uint16(f[14+6:]) != 2 {
		t.Fatalf("ARP reply % x", f)
	}

	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'e', 't', 'r', 'e', 'l'}
	binary.BigEndian.PutUint16(echo[2:], nettest.Checksum(0, echo))
	u.Send([][]byte{nettest.Ethernet(gatewayMAC, guestMAC, nettest.EtherIPv4, nettest.IPv4(me, gw, 1, 7, echo))})
	f = next(t, g, func(f []byte) bool {
		if r := nettest.ARPReply(f, me, guestMAC); r != nil {
			u.Send([][]byte{r})
			return false
		}
		p, ok := nettest.ParseIPv4(f)
		return ok && p.Proto == 1
	})
	p, _ := nettest.ParseIPv4(f)
	if [6]byte(f[6:12]) != gatewayMAC || p.Src != gw || p.Dst != me || p.Payload[0] != 0 ||
		!bytes.Equal(p.Payload[4:], echo[4:]) || nettest.Checksum(0, p.Payload) != 0 {
		t.Fatalf("echo reply from %v to %v: % x", p.Src, p.Dst, p.Payload)
	}
}

// next returns the first frame from the network that want accepts.
func next(t *testing.T, g *guest, want func([]byte) bool) []byte {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-g.frames:
			if len(f) >= 14 && want(f) {
				return f
			}
		case <-timeout:
			t.Fatal("no such frame within 10 s")
		}
	}
}
