// Package user is the user-mode network backend (QEMU's -netdev user,
// slirp): no privileges, no host interface. The guest's frames go to
// gVisor's TCP/IP stack in this process, which answers ARP and ping for the
// gateway; DHCP is served at the link (dhcp.go), and the guest's TCP and
// UDP flows become host sockets (nat.go). The gateway address also reaches
// the host's loopback, as slirp's 10.0.2.2 does, its port 53 the host's
// resolver (dns.go), and hostfwd rules carry host ports into the guest
// (hostfwd.go).
//
// Goroutines: the link's reader (link.go), one accept loop per hostfwd
// rule, and per NAT flow a copier each way. All of them are counted by the
// User's tracker and have ended when Close returns; so have the stack's.
package user

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/netdev"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Addresses inside the network, as host numbers of the subnet (slirp's).
const (
	gatewayHost = 2  // router, DNS, and the host's loopback
	firstLease  = 15 // the first address DHCP hands out (10.0.2.15)
	// DefaultNet is the network without net=, slirp's default.
	DefaultNet = "10.0.2.0/24"
	// mtu is the stack's MTU, which its DHCP server also hands out, and
	// the one the NIC offers the driver (VIRTIO_NET_F_MTU): nothing on
	// this network is a real Ethernet, and frames cost per frame (a
	// system call each way and a pass through the stack), so as
	// slirp4netns and passt do, 65520 rather than 1500. TCP to the guest
	// follows the MSS the guest announces, so a guest at 1500 still works.
	mtu = 65520
	// nicID is the stack's one NIC, the guest's link.
	nicID tcpip.NICID = 1
)

// gatewayMAC is slirp's gateway address (52:55, then 10.0.2.2's bytes),
// kept whatever net= is.
var gatewayMAC = [6]byte{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02}

// Forward is one hostfwd rule: connections to the host's HostAddr go to
// GuestAddr in the guest (TCP only).
type Forward struct {
	HostAddr  netip.AddrPort // zero address: every host interface
	GuestAddr netip.AddrPort // zero address: the first DHCP address
}

// dialFunc opens a host socket for a NAT flow ("tcp" or "udp").
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config is -netdev user's options.
type Config struct {
	// ID is the -netdev id, for errors and netdev.Backend.ID.
	ID  string
	Net netip.Prefix // zero: 10.0.2.0/24
	// HostFwd are the parsed hostfwd rules (ParseHostFwd), each a host
	// listener opened by Open.
	HostFwd []Forward

	// resolver replaces the host's resolver from /etc/resolv.conf, and
	// dial the host's sockets (tests).
	resolver netip.AddrPort
	dial     dialFunc
}

// User is a running user-mode network.
type User struct {
	// FDLink is the NIC's end of the socket pair: frames without a vnet
	// header, one per SOCK_SEQPACKET message.
	*netdev.FDLink
	id string
	// link is the stack's end of the socket pair.
	link  *frameLink
	stack *stack.Stack
	dhcp  *dhcpServer
	// net is the guest network; gateway its .2, guest its first DHCP
	// lease (.15).
	net      netip.Prefix
	gateway  netip.Addr
	guest    netip.Addr
	resolver netip.AddrPort // where the gateway's port 53 goes
	dial     dialFunc
	// ctx ends at Close, cancelling host dials in progress.
	ctx    context.Context
	cancel context.CancelFunc
	// listeners are the hostfwd listeners, in rule order.
	listeners []net.Listener
	track     tracker
	// udpFlows counts open UDP flows (at most maxUDPFlows).
	udpFlows  atomic.Int64
	closeOnce sync.Once
}

// Open starts a user-mode network.
func Open(c Config) (*User, error) {
	if !c.Net.IsValid() {
		c.Net = netip.MustParsePrefix(DefaultNet)
	}
	if !c.Net.Addr().Is4() || c.Net.Bits() > 24 || c.Net.Bits() < 8 {
		return nil, fmt.Errorf("netdev user %s: net=%s: want an IPv4 network of /8 to /24", c.ID, c.Net)
	}
	c.Net = c.Net.Masked()
	u := &User{id: c.ID, net: c.Net, gateway: hostAddr(c.Net, gatewayHost), guest: hostAddr(c.Net, firstLease),
		resolver: c.resolver, dial: c.dial}
	if !u.resolver.IsValid() {
		u.resolver = hostResolver("/etc/resolv.conf")
	}
	if u.dial == nil {
		u.dial = (&net.Dialer{}).DialContext
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.dhcp = newDHCPServer(c.Net, u.gateway, gatewayMAC)

	// One SOCK_SEQPACKET pair carries one frame per message: the stack
	// serves one end, the NIC the other.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netdev user %s: socketpair: %w", c.ID, err)
	}
	for _, fd := range fds {
		// Room for a burst of full frames each way.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	if u.link, err = newFrameLink(fds[1], mtu, gatewayMAC); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("netdev user %s: %w", c.ID, err)
	}
	if err := u.startStack(); err != nil {
		unix.Close(fds[0])
		u.link.Close()
		return nil, fmt.Errorf("netdev user %s: %w", c.ID, err)
	}
	u.link.start(u.fromGuest)
	if u.FDLink, err = netdev.NewFDLink(fds[0], "netdev user "+c.ID, false); err != nil {
		u.cancel()
		u.shutdownStack()
		return nil, err
	}
	for _, f := range c.HostFwd {
		if err := u.forward(f); err != nil {
			u.Close()
			return nil, fmt.Errorf("netdev user %s: hostfwd %v: %w", c.ID, f.HostAddr, err)
		}
	}
	return u, nil
}

// startStack builds the netstack: one NIC on the link holding the gateway
// address, promiscuous (it takes packets for any address, which the NAT
// forwarders then own) and spoofing (it answers from those addresses).
func (u *User) startStack() error {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	u.stack = s
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	if err := s.CreateNIC(nicID, ethernet.New(u.link)); err != nil {
		return fmt.Errorf("netstack NIC: %s", err)
	}
	if err := s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(u.gateway.As4()), PrefixLen: u.net.Bits()}},
		stack.AddressProperties{}); err != nil {
		return fmt.Errorf("netstack address: %s", err)
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack promiscuous mode: %s", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack spoofing: %s", err)
	}
	subnet, err := tcpip.NewSubnet(tcpip.AddrFrom4(u.net.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(u.net.Bits(), 32)))
	if err != nil {
		return fmt.Errorf("netstack route: %v", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: subnet, NIC: nicID}})
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, maxPendingTCP, u.acceptTCP).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, u.acceptUDP).HandlePacket)
	return nil
}

// fromGuest takes each frame the guest sends, on the link's reader: DHCP
// requests are answered at the link, everything else goes to the stack.
func (u *User) fromGuest(frame []byte) {
	if isDHCP, reply := u.dhcp.handleFrame(frame); isDHCP {
		if reply != nil {
			u.link.writeFrame(reply) // fails only once the NIC's end is closed
		}
		return
	}
	u.link.inject(frame)
}

// hostAddr is host number n of network p (p's address plus n); Open keeps
// n within the network by requiring a /24 or larger.
func hostAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ID implements netdev.Backend.
func (u *User) ID() string { return u.id }

// Gateway is the router, DNS server and host-loopback address.
func (u *User) Gateway() netip.Addr { return u.gateway }

// GuestAddr is the first address DHCP hands out.
func (u *User) GuestAddr() netip.Addr { return u.guest }

// MaxFrame implements netdev.Backend: the stack's MTU plus an Ethernet
// and a VLAN header.
func (u *User) MaxFrame() int { return mtu + 18 }

// MTU is the network's MTU (the NIC offers it with VIRTIO_NET_F_MTU).
func (u *User) MTU() int { return mtu }

// SetOffloads implements netdev.Backend: frames carry no virtio header, so
// the NIC offers no offloads and there is nothing to set.
func (u *User) SetOffloads(netdev.Offloads) error { return nil }

// Close implements netdev.Backend. Order: no new flows or forwarded
// connections (listeners closed, dials cancelled, the tracker closed,
// which closes every flow's sockets and waits for its goroutines), then
// the NIC's end of the link, then the stack's end with its reader, and
// last the stack with its own goroutines.
// A second Close does nothing and returns nil.
func (u *User) Close() error {
	var errs []error
	u.closeOnce.Do(func() {
		for _, l := range u.listeners {
			errs = append(errs, l.Close())
		}
		u.cancel()
		u.track.shutdown()
		errs = append(errs, u.FDLink.Close())
		u.shutdownStack()
	})
	return errors.Join(errs...)
}

// shutdownStack stops the link's reader and the stack.
func (u *User) shutdownStack() {
	u.link.Close()
	u.stack.Close()
	u.stack.Wait()
}
