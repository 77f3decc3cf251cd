package user

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// leasedGuest opens a network with c, attaches a guest that takes a DHCP
// lease and runs its stack on it. The caller closes u.
func leasedGuest(t *testing.T, c Config) (*User, *guest, *stack.Stack) {
	t.Helper()
	return leasedGuestMTU(t, c, 0)
}

// leasedGuestMTU is leasedGuest with the guest's stack at mtu.
func leasedGuestMTU(t *testing.T, c Config, mtu uint32) (*User, *guest, *stack.Stack) {
	t.Helper()
	u, err := Open(c)
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{u: u, frames: make(chan []byte, 64), mtu: mtu}
	if err := u.Attach(g); err != nil {
		t.Fatal(err)
	}
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC[:]))
	if err != nil {
		t.Fatal(err)
	}
	req, err := dhcpv4.NewRequestFromOffer(g.dhcp(t, disc, dhcpv4.MessageTypeOffer))
	if err != nil {
		t.Fatal(err)
	}
	ack := g.dhcp(t, req, dhcpv4.MessageTypeAck)
	addr, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	gw, _ := netip.AddrFromSlice(ack.Router()[0].To4())
	bits, _ := net.IPMask(ack.SubnetMask()).Size()
	return u, g, g.startStack(t, addr, bits, gw)
}

func fullAddr(ap netip.AddrPort) *tcpip.FullAddress {
	return &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

// guestTCP connects from the guest's stack to ap.
func guestTCP(s *stack.Stack, ap string) (*gonet.TCPConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, s, *fullAddr(netip.MustParseAddrPort(ap)), ipv4.ProtocolNumber)
}

// guestUDP opens a connected UDP socket in the guest's stack to ap.
func guestUDP(t *testing.T, s *stack.Stack, ap string) *gonet.UDPConn {
	t.Helper()
	c, err := gonet.DialUDP(s, &tcpip.FullAddress{NIC: 1}, fullAddr(netip.MustParseAddrPort(ap)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// udpEcho answers each datagram on 127.0.0.1 with prefix+datagram until
// closed.
func udpEcho(t *testing.T, prefix string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	return c
}

// tcpEcho serves each connection on 127.0.0.1 with its own bytes back
// until EOF, then closes it.
func tcpEcho(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l
}

// exchange writes msg to c, half-closes it and returns all it reads back.
func exchange(c net.Conn, msg []byte) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	return io.ReadAll(c)
}

// UDP to the gateway reaches a socket on the host's loopback, and its
// answers come back to the guest from the gateway's address and port,
// twice over the same flow.
func TestUDPNATReplies(t *testing.T) {
	echo := udpEcho(t, "echo:")
	defer echo.Close()
	u, _, s := leasedGuest(t, Config{ID: "n0"})
	defer u.Close()
	port := echo.LocalAddr().(*net.UDPAddr).Port
	c := guestUDP(t, s, fmt.Sprintf("10.0.2.2:%d", port))
	defer c.Close()
	for i := range 2 {
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 100)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if string(buf[:n]) != "echo:"+msg || from.String() != fmt.Sprintf("10.0.2.2:%d", port) {
			t.Fatalf("reply %d: %q from %v", i, buf[:n], from)
		}
	}
}

// A guest at the network's MTU (as Linux is over virtio-net, which offers
// it) moves 4 MiB each way in frames of up to 65534 bytes.
func TestFullMTUGuest(t *testing.T) {
	echo := tcpEcho(t)
	defer echo.Close()
	u, _, s := leasedGuestMTU(t, Config{ID: "n0"}, mtu)
	defer u.Close()
	c, err := guestTCP(s, fmt.Sprintf("10.0.2.2:%d", echo.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 4<<20)
	rand.Read(msg)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); c.CloseWrite(); errc <- err }()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	back, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(back, msg) || <-errc != nil {
		t.Fatalf("%d of %d bytes back, %v", len(back), len(msg), err)
	}
	st := u.Stats()
	tx, rx := st.TxBytes.Load()/st.TxFrames.Load(), st.RxBytes.Load()/st.RxFrames.Load()
	t.Logf("frames average %d bytes from the guest, %d to it", tx, rx)
	if tx < 8192 || rx < 8192 {
		t.Errorf("frames average %d bytes from the guest, %d to it: the MTU is not used", tx, rx)
	}
}

// Flows to addresses outside the guest network go to that address on the
// host (the dial hook sees them); the guest network's own addresses and
// closed host ports answer the guest's SYN with a reset.
func TestTCPNATTargets(t *testing.T) {
	echo := tcpEcho(t)
	defer echo.Close()
	var mu sync.Mutex
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, network+" "+addr)
		mu.Unlock()
		if addr == "198.51.100.7:80" {
			return (&net.Dialer{}).DialContext(ctx, network, echo.Addr().String())
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	u, _, s := leasedGuest(t, Config{ID: "n0", dial: dial})
	defer u.Close()

	c, err := guestTCP(s, "198.51.100.7:80")
	if err != nil {
		t.Fatalf("NAT to 198.51.100.7: %v", err)
	}
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	back, err := exchange(c, msg)
	c.Close()
	if err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("echo through NAT: %d of %d bytes, %v", len(back), len(msg), err)
	}

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	for _, target := range []string{"10.0.2.3:80", fmt.Sprintf("10.0.2.2:%d", closedPort)} {
		if c, err := guestTCP(s, target); err == nil {
			c.Close()
			t.Errorf("%s: connected", target)
		} else if !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: %v, want connection refused", target, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"tcp 198.51.100.7:80", fmt.Sprintf("tcp 127.0.0.1:%d", closedPort)}
	if fmt.Sprint(dialed) != fmt.Sprint(want) {
		t.Errorf("host dials %q, want %q", dialed, want)
	}
}

// The gateway's port 53 is the host's resolver over UDP and TCP: queries
// reach it unchanged and its answers come back.
func TestDNSAtGateway(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	port := tl.Addr().(*net.TCPAddr).Port
	ul, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Skipf("UDP port %d taken: %v", port, err)
	}
	defer ul.Close()
	// The resolver answers a query with the query, QR set (RFC 1035
	// 4.1.1), and "udp" or "tcp" appended.
	answer := func(q []byte, via string) []byte {
		r := append(append([]byte(nil), q...), via...)
		r[2] |= 0x80
		return r
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo(answer(buf[:n], "udp"), from)
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			var n uint16
			binary.Read(c, binary.BigEndian, &n)
			q := make([]byte, n)
			io.ReadFull(c, q)
			r := answer(q, "tcp")
			c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(r))))
			c.Write(r)
			c.Close()
		}
	}()
	resolver := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	u, _, s := leasedGuest(t, Config{ID: "n0", resolver: resolver})
	defer u.Close()
	// A query for example.test. A IN, id 0x1234, RD.
	query := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
		7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}

	c := guestUDP(t, s, "10.0.2.2:53")
	defer c.Close()
	c.Write(query)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], answer(query, "udp")) {
		t.Fatalf("DNS over UDP: % x, %v", buf[:n], err)
	}

	tc, err := guestTCP(s, "10.0.2.2:53")
	if err != nil {
		t.Fatalf("DNS over TCP: %v", err)
	}
	defer tc.Close()
	back, err := exchange(tc, append(binary.BigEndian.AppendUint16(nil, uint16(len(query))), query...))
	want := answer(query, "tcp")
	if err != nil || !bytes.Equal(back, append(binary.BigEndian.AppendUint16(nil, uint16(len(want))), want...)) {
		t.Fatalf("DNS over TCP: % x, %v", back, err)
	}
}

func TestHostResolver(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	os.WriteFile(conf, []byte("# generated\nsearch example.test\nnameserver bogus\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"), 0o644)
	if got := hostResolver(conf); got.String() != "192.0.2.53:53" {
		t.Errorf("resolver %v, want the first valid nameserver", got)
	}
	if got := hostResolver(filepath.Join(dir, "missing")); got.String() != "127.0.0.1:53" {
		t.Errorf("resolver without resolv.conf %v", got)
	}
}

// Several host connections through one hostfwd rule at once, each with its
// own data echoed by the guest; in the guest they come from the gateway.
func TestHostFwdSeveralConnections(t *testing.T) {
	u, _, s := leasedGuest(t, Config{ID: "n0", HostFwd: []Forward{{HostAddr: netip.MustParseAddrPort("127.0.0.1:0"),
		GuestAddr: netip.MustParseAddrPort("0.0.0.0:7")}}})
	defer u.Close()
	ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Port: 7}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	const conns = 8
	errs := make(chan error, conns)
	for i := range conns {
		go func() {
			c, err := net.Dial("tcp", u.HostFwdAddrs()[0].String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := make([]byte, 64<<10+i)
			rand.Read(msg)
			back, err := exchange(c, msg)
			if err == nil && !bytes.Equal(back, msg) {
				err = fmt.Errorf("connection %d: %d of %d bytes back", i, len(back), len(msg))
			}
			errs <- err
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		if p := <-peers; p != "10.0.2.2" {
			t.Errorf("forwarded connection from %s, want the gateway", p)
		}
	}
}

// Close ends everything the network runs, with flows still open each way
// (a NAT TCP connection, a UDP flow, a hostfwd connection): afterwards no
// goroutine is left beyond those running before Open.
func TestCloseEndsGoroutines(t *testing.T) {
	echo := tcpEcho(t)
	uecho := udpEcho(t, "")
	before := runtime.NumGoroutine()

	u, g, s := leasedGuest(t, Config{ID: "n0", HostFwd: []Forward{{HostAddr: netip.MustParseAddrPort("127.0.0.1:0"),
		GuestAddr: netip.MustParseAddrPort("0.0.0.0:7")}}})
	out, err := guestTCP(s, fmt.Sprintf("10.0.2.2:%d", echo.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	out.Write([]byte("x"))
	uc := guestUDP(t, s, fmt.Sprintf("10.0.2.2:%d", uecho.LocalAddr().(*net.UDPAddr).Port))
	uc.Write([]byte("y"))
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	ln, _ := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Port: 7}, ipv4.ProtocolNumber)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	in, err := net.Dial("tcp", u.HostFwdAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	gin := <-accepted

	closed := make(chan error, 1)
	go func() { closed <- u.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatal("Close hangs with flows open")
	}
	if err := u.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The host's ends see the flows end.
	in.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := in.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("hostfwd connection after Close: %v, want EOF", err)
	}
	for _, c := range []io.Closer{in, gin, out, uc, ln, echo, uecho} {
		c.Close()
	}
	g.stop()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatalf("%d goroutines after Close, %d before Open", n, before)
	}
}
