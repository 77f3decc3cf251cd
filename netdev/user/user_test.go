package user

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/petrel-vmm/petrel/netdev/nettest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

var guestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// guest plays the guest side of the link with raw Ethernet frames: DHCP by
// hand, then TCP through a netstack of its own bound to the leased address.
type guest struct {
	u      *User
	frames chan []byte // before the stack runs
	ep     *channel.Endpoint
	// stop ends the stack startStack ran and its goroutines.
	stop func()
	// mtu is the guest stack's MTU (zero: 1500).
	mtu uint32
}

func (g *guest) Receive(frame []byte) {
	f := append([]byte(nil), frame...)
	if g.ep != nil {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f)})
		g.ep.InjectInbound(0, pkt)
		pkt.DecRef()
		return
	}
	select {
	case g.frames <- f:
	default:
	}
}

// dhcp sends msg from 0.0.0.0:68 to the broadcast address and returns the
// server's reply of the wanted type.
func (g *guest) dhcp(t *testing.T, msg *dhcpv4.DHCPv4, want dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	t.Helper()
	u := nettest.UDP(netip.MustParseAddrPort("0.0.0.0:68"), netip.MustParseAddrPort("255.255.255.255:67"), msg.ToBytes(), false)
	ip := nettest.IPv4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), nettest.ProtoUDP, 1, u)
	if err := g.u.Send([][]byte{nettest.Ethernet([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, guestMAC, nettest.EtherIPv4, ip)}); err != nil {
		t.Fatal(err)
	}
	for f := range g.frames {
		p, ok := nettest.ParseIPv4(f)
		if !ok || p.Proto != nettest.ProtoUDP || len(p.Payload) < 8 || p.Payload[3] != 68 {
			continue
		}
		reply, err := dhcpv4.FromBytes(p.Payload[8:])
		if err != nil {
			t.Fatalf("DHCP reply: %v", err)
		}
		if reply.MessageType() == want && reply.TransactionID == msg.TransactionID {
			return reply
		}
	}
	return nil
}

// startStack runs a netstack on the link with addr/prefix and a default
// route through gw.
func (g *guest) startStack(t *testing.T, addr netip.Addr, bits int, gw netip.Addr) *stack.Stack {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	ch := channel.New(256, cmp.Or(g.mtu, 1500), tcpip.LinkAddress(guestMAC[:]))
	if err := s.CreateNIC(1, ethernet.New(ch)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(addr.As4()).WithPrefix()}, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header0(), Gateway: tcpip.AddrFrom4(gw.As4()), NIC: 1}})
	g.ep = ch
	ctx, cancel := context.WithCancel(context.Background())
	readerDone := make(chan struct{})
	g.stop = sync.OnceFunc(func() { cancel(); <-readerDone; s.Close(); s.Wait() })
	t.Cleanup(g.stop)
	go func() {
		defer close(readerDone)
		for {
			pkt := ch.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			g.u.Send([][]byte{v.AsSlice()})
			v.Release()
			pkt.DecRef()
		}
	}()
	return s
}

func header0() tcpip.Subnet {
	s, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{}), tcpip.MaskFromBytes(make([]byte, 4)))
	return s
}

func digest(b []byte) [32]byte { return sha256.Sum256(b) }

// The guest gets 10.0.2.15 by DHCP, fetches 1 MiB over HTTP from a server
// on the host's 127.0.0.1 through the gateway's NAT, and serves 1 MiB back
// through hostfwd; both digests are checked.
func TestUserModeGuest(t *testing.T) {
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(payload) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	u, err := Open(Config{ID: "n0", HostFwd: []Forward{{HostAddr: netip.MustParseAddrPort("127.0.0.1:0"),
		GuestAddr: netip.MustParseAddrPort("0.0.0.0:8080")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	g := &guest{u: u, frames: make(chan []byte, 64)}
	if err := u.Attach(g); err != nil {
		t.Fatal(err)
	}
	defer u.Detach()

	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC[:]))
	if err != nil {
		t.Fatal(err)
	}
	offer := g.dhcp(t, disc, dhcpv4.MessageTypeOffer)
	if !offer.YourIPAddr.Equal(net.IPv4(10, 0, 2, 15)) || !offer.Router()[0].Equal(net.IPv4(10, 0, 2, 2)) {
		t.Fatalf("offer: address %v router %v", offer.YourIPAddr, offer.Router())
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack := g.dhcp(t, req, dhcpv4.MessageTypeAck)
	addr, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	gw, _ := netip.AddrFromSlice(ack.Router()[0].To4())
	bits, _ := net.IPMask(ack.SubnetMask()).Size()
	if dns := ack.DNS(); len(dns) != 1 || !dns[0].Equal(net.IPv4(10, 0, 2, 2)) {
		t.Errorf("DNS servers %v", dns)
	}
	s := g.startStack(t, addr, bits, gw)

	// Outbound through NAT: the gateway address is the host's loopback.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
		ap := netip.MustParseAddrPort(a)
		return gonet.DialContextTCP(ctx, s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
	}}}
	req2, _ := http.NewRequestWithContext(ctx, "GET", "http://10.0.2.2:"+port+"/file", nil)
	resp, err := hc.Do(req2)
	if err != nil {
		t.Fatalf("GET through NAT: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || digest(got) != digest(payload) {
		t.Fatalf("GET through NAT: %d bytes, %v, digest equal %v", len(got), err, bytes.Equal(got, payload))
	}

	// Inbound through hostfwd to the guest's port 8080.
	ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Port: 8080}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(payload)
		c.Close()
	}()
	hostSide, err := net.Dial("tcp", u.HostFwdAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer hostSide.Close()
	back, err := io.ReadAll(hostSide)
	if err != nil || digest(back) != digest(payload) {
		t.Fatalf("hostfwd: %d bytes, %v", len(back), err)
	}
	st := u.Stats()
	t.Logf("frames: %d sent, %d received", st.TxFrames.Load(), st.RxFrames.Load())
}

func TestParseHostFwd(t *testing.T) {
	for in, want := range map[string]string{
		"tcp::5555-:22":                  ":5555 -> :22",
		"tcp:127.0.0.1:8080-10.0.2.9:80": "127.0.0.1:8080 -> 10.0.2.9:80",
	} {
		f, err := ParseHostFwd(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		got := fmtAP(f.HostAddr) + " -> " + fmtAP(f.GuestAddr)
		if got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"udp::53-:53", "tcp::5555", "tcp:5555-:22", "tcp::x-:22", "tcp::1-:0", "tcp:::1:5-:2"} {
		if _, err := ParseHostFwd(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func fmtAP(a netip.AddrPort) string {
	if !a.Addr().IsValid() {
		return ":" + strconv.Itoa(int(a.Port()))
	}
	return a.String()
}
