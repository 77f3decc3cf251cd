package tap

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/petrel-vmm/petrel/netdev"
	"github.com/petrel-vmm/petrel/netdev/nettest"
	"golang.org/x/sys/unix"
)

var (
	hostIP   = netip.MustParseAddr("10.9.0.1")
	guestIP  = netip.MustParseAddr("10.9.0.2")
	guestMAC = [6]byte{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
)

// inNewNetns moves the calling goroutine's thread into a new network
// namespace for the rest of the test (the thread is never unlocked, so it
// ends with the test goroutine). It skips loudly when the host cannot
// (not root, no /dev/net/tun) and fails under CI.
func inNewNetns(t *testing.T) {
	t.Helper()
	cannot := func(why string, err error) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v", why, err)
		}
		t.Skipf("SKIP: tap test needs root and /dev/net/tun: %s: %v", why, err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		cannot("no /dev/net/tun", err)
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		cannot("unshare(CLONE_NEWNET)", err)
	}
}

// ifup gives ifname an address and brings it up (ioctls on a socket of
// this thread's namespace).
func ifup(t *testing.T, ifname string, addr netip.Addr, bits int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq(ifname)
	if err := ifr.SetInet4Addr(addr.AsSlice()); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		t.Fatalf("SIOCSIFADDR: %v", err)
	}
	mask := net.CIDRMask(bits, 32)
	ifr, _ = unix.NewIfreq(ifname)
	ifr.SetInet4Addr(mask)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		t.Fatalf("SIOCSIFNETMASK: %v", err)
	}
	ifr, _ = unix.NewIfreq(ifname)
	ifr.SetUint16(unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCSIFFLAGS: %v", err)
	}
}

// guestSide collects frames from the tap and answers ARP for the guest.
type guestSide struct {
	tap    *Tap
	frames chan []byte
}

func (g *guestSide) Receive(frame []byte) {
	hdr, eth := frame[:netdev.VnetHdrLen], frame[netdev.VnetHdrLen:]
	if r := nettest.ARPReply(eth, guestIP, guestMAC); r != nil {
		g.tap.Send([][]byte{make([]byte, netdev.VnetHdrLen), r})
		return
	}
	if p, ok := nettest.ParseIPv4(eth); ok && p.Proto == nettest.ProtoUDP {
		g.frames <- append(append([]byte(nil), hdr...), eth...)
	}
}

// sendUDP sends a datagram from the guest with vnet header hdr.
func sendUDP(t *testing.T, tp *Tap, hostMAC [6]byte, payload []byte, hdr []byte, corrupt, partial bool) {
	t.Helper()
	u := nettest.UDP(netip.AddrPortFrom(guestIP, 5000), netip.AddrPortFrom(hostIP, 7777), payload, partial)
	if corrupt {
		u[6] ^= 0x55
	}
	f := nettest.Ethernet(hostMAC, guestMAC, nettest.EtherIPv4, nettest.IPv4(guestIP, hostIP, nettest.ProtoUDP, 1, u))
	if err := tp.Send([][]byte{hdr, f[:20], f[20:]}); err != nil {
		t.Fatal(err)
	}
}

// A real tap in a network namespace the test makes: a guest's UDP datagram
// reaches a host socket, a bad checksum is dropped by the host kernel, a
// partial checksum with NEEDS_CSUM is completed by it, the host's reply
// comes back after ARP, and with TUNSETOFFLOAD the host hands over
// partially checksummed frames.
func TestTapInNetns(t *testing.T) {
	inNewNetns(t)
	tp, err := Open("n0", "petrel-t0")
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ifup(t, "petrel-t0", hostIP, 24)
	ifc, err := net.InterfaceByName("petrel-t0")
	if err != nil {
		t.Fatal(err)
	}
	hostMAC := [6]byte(ifc.HardwareAddr)
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(hostIP, 7777)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := &guestSide{tap: tp, frames: make(chan []byte, 16)}
	if err := tp.Attach(g); err != nil {
		t.Fatal(err)
	}
	defer tp.Detach()

	zero := make([]byte, netdev.VnetHdrLen)
	read := func() string {
		buf := make([]byte, 2000)
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	sendUDP(t, tp, hostMAC, []byte("full checksum"), zero, false, false)
	if got := read(); got != "full checksum" {
		t.Fatalf("host got %q", got)
	}
	// The corrupted datagram is dropped by the host's UDP; the next one
	// arrives next.
	sendUDP(t, tp, hostMAC, []byte("corrupt"), zero, true, false)
	partial := make([]byte, netdev.VnetHdrLen)
	partial[0] = 1                                 // NEEDS_CSUM
	binary.LittleEndian.PutUint16(partial[6:], 34) // csum_start: the UDP header
	binary.LittleEndian.PutUint16(partial[8:], 6)  // csum_offset: its checksum field
	sendUDP(t, tp, hostMAC, []byte("partial checksum"), partial, false, true)
	if got := read(); got != "partial checksum" {
		t.Fatalf("host got %q after a corrupt and a partial datagram", got)
	}

	reply := func(msg string) (hdr []byte, udp []byte) {
		if _, err := conn.WriteToUDPAddrPort([]byte(msg), netip.AddrPortFrom(guestIP, 5000)); err != nil {
			t.Fatal(err)
		}
		f := <-g.frames
		p, _ := nettest.ParseIPv4(f[netdev.VnetHdrLen:])
		if p.Src != hostIP || p.Dst != guestIP || string(p.Payload[8:]) != msg {
			t.Fatalf("guest got %v -> %v %q", p.Src, p.Dst, p.Payload)
		}
		return f[:netdev.VnetHdrLen], p.Payload
	}
	hdr, u := reply("reply without offloads")
	ps := nettest.PseudoSum(hostIP, guestIP, nettest.ProtoUDP, len(u))
	if hdr[0] != 0 || nettest.Checksum(ps, u) != 0 {
		t.Fatalf("without offloads: header %x, checksum does not verify", hdr)
	}
	if err := tp.SetOffloads(netdev.Offloads{Csum: true, TSO4: true, TSO6: true}); err != nil {
		t.Fatal(err)
	}
	hdr, u = reply("reply with checksum offload")
	if hdr[0]&1 == 0 || binary.LittleEndian.Uint16(hdr[6:]) != 34 || binary.LittleEndian.Uint16(hdr[8:]) != 6 {
		t.Fatalf("with TUN_F_CSUM: header %x, want NEEDS_CSUM at 34+6", hdr)
	}
	// The field holds the pseudo-header sum; completing the checksum from
	// csum_start as a guest does makes the datagram verify.
	binary.BigEndian.PutUint16(u[6:], nettest.Checksum(0, u))
	if nettest.Checksum(nettest.PseudoSum(hostIP, guestIP, nettest.ProtoUDP, len(u)), u) != 0 {
		t.Fatal("partial checksum from the host does not complete")
	}
	if st := tp.Stats(); st.TxFrames.Load() < 4 || st.RxFrames.Load() < 2 {
		t.Fatalf("stats: %d sent, %d received", st.TxFrames.Load(), st.RxFrames.Load())
	}
}
