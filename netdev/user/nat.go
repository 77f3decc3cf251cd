package user

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Bounds on what a guest can make the host hold: each flow is a host
// socket and one or two goroutines; each UDP flow also two 64 KiB buffers.
const (
	// maxPendingTCP is how many guest SYNs may wait for their host connect
	// at once (the forwarder ignores more; the guest retransmits).
	maxPendingTCP = 256
	// maxUDPFlows is how many UDP flows may be open at once; a datagram
	// that would start another is dropped.
	maxUDPFlows = 128
	// tcpDialTimeout bounds a host connect for a guest's SYN.
	tcpDialTimeout = 20 * time.Second
	// udpIdle ends a UDP flow with no datagram either way for this long
	// (DNS flows: dnsIdle, since resolvers use a port per query).
	udpIdle = 60 * time.Second
	dnsIdle = 5 * time.Second
	// maxDatagram is the largest UDP payload over IPv4.
	maxDatagram = 65535
)

// hostTarget is where a guest flow to dst:port goes on the host: the
// gateway is the host's loopback, and its port 53 the host's resolver;
// addresses of the guest network, loopback, multicast and broadcast reach
// nothing (ok false).
func (u *User) hostTarget(dst tcpip.Address, port uint16) (netip.AddrPort, bool) {
	if dst.Len() != 4 || port == 0 {
		return netip.AddrPort{}, false
	}
	a := netip.AddrFrom4(dst.As4())
	switch {
	case a == u.gateway && port == 53:
		return u.resolver, u.resolver.IsValid()
	case a == u.gateway:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port), true
	case u.net.Contains(a) || !a.IsGlobalUnicast():
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, port), true
}

// acceptTCP serves one guest SYN (on the forwarder's goroutine): the host
// connection comes first, so that a refused or unreachable host makes the
// guest see a reset, as under slirp; then the handshake completes and the
// two are spliced.
func (u *User) acceptTCP(r *tcp.ForwarderRequest) {
	if !u.track.enter() {
		r.Complete(true)
		return
	}
	defer u.track.exit()
	id := r.ID()
	target, ok := u.hostTarget(id.LocalAddress, id.LocalPort)
	if !ok {
		r.Complete(true)
		return
	}
	ctx, cancel := context.WithTimeout(u.ctx, tcpDialTimeout)
	host, err := u.dial(ctx, "tcp", target.String())
	cancel()
	if err != nil {
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(terr != nil)
	if terr != nil {
		host.Close()
		return
	}
	u.splice(gonet.NewTCPConn(&wq, ep), host)
}

// flow is the sockets of one NAT flow or forwarded connection; closing it
// (at the flow's end, or by the tracker at shutdown) wakes its copiers.
type flow struct {
	conns  []net.Conn
	once   sync.Once
	closed atomic.Bool
}

func (f *flow) Close() error {
	f.once.Do(func() {
		f.closed.Store(true)
		for _, c := range f.conns {
			c.SetDeadline(time.Now()) // gonet's readers wake on deadlines
			c.Close()
		}
	})
	return nil
}

// splice copies between a guest and a host TCP connection, on the calling
// (counted) goroutine and one more, until both directions end. Each EOF
// is passed on as a half-close, so protocols that shut down writing first
// (an HTTP client, netcat) still get their answer; an error either way
// (a reset) ends both.
func (u *User) splice(guest, host net.Conn) {
	f := &flow{conns: []net.Conn{guest, host}}
	if !u.track.add(f) {
		return
	}
	defer func() {
		u.track.remove(f)
		f.Close()
	}()
	done := make(chan struct{})
	if !u.track.spawn(func() {
		defer close(done)
		copyHalf(f, host, guest)
	}) {
		return
	}
	copyHalf(f, guest, host)
	<-done
}

// copyHalf copies src to dst, then half-closes dst; on an error it closes
// the whole flow.
func copyHalf(f *flow, dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		f.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// acceptUDP serves the first datagram of a new guest UDP flow (source and
// destination pair), inline on the stack's receive path, so it only opens
// sockets: a connected host socket to the flow's target and a stack
// endpoint bound to the destination the guest used (replies come from
// it), relayed both ways until the flow is idle.
func (u *User) acceptUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	target, ok := u.hostTarget(id.LocalAddress, id.LocalPort)
	if !ok {
		return
	}
	if u.udpFlows.Add(1) > maxUDPFlows {
		u.udpFlows.Add(-1)
		return
	}
	started := false
	defer func() {
		if !started {
			u.udpFlows.Add(-1)
		}
	}()
	host, err := u.dial(u.ctx, "udp", target.String())
	if err != nil {
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		return
	}
	f := &flow{conns: []net.Conn{gonet.NewUDPConn(&wq, ep), host}}
	if !u.track.add(f) {
		return
	}
	idle := udpIdle
	if id.LocalPort == 53 {
		idle = dnsIdle
	}
	started = u.track.spawn(func() { u.relayUDP(f, idle) })
	if !started {
		u.track.remove(f)
		f.Close()
	}
}

// relayUDP moves datagrams both ways for one flow until it has been idle
// for idle, either socket fails, or the tracker closes it.
func (u *User) relayUDP(f *flow, idle time.Duration) {
	defer u.udpFlows.Add(-1)
	defer func() {
		u.track.remove(f)
		f.Close()
	}()
	guest, host := f.conns[0], f.conns[1]
	var last atomic.Int64 // UnixNano of the last datagram either way
	last.Store(time.Now().UnixNano())
	copyDatagrams := func(dst, src net.Conn) {
		buf := make([]byte, maxDatagram)
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				if !f.closed.Load() && (errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err)) {
					if time.Since(time.Unix(0, last.Load())) < idle {
						continue // the other direction is busy
					}
				}
				f.Close()
				return
			}
			last.Store(time.Now().UnixNano())
			dst.Write(buf[:n]) // a datagram lost is UDP's to recover
		}
	}
	done := make(chan struct{})
	if u.track.spawn(func() {
		defer close(done)
		copyDatagrams(host, guest)
	}) {
		copyDatagrams(guest, host)
		<-done
	}
}

// isTimeout reports a deadline error (gonet's is a net.Error).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
