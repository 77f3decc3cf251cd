package user

import (
	"fmt"
	"os"
	"sync"

	"github.com/petrel-vmm/petrel/netdev"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// frameLink is the stack's end of the socket pair as a gVisor link
// endpoint (wrapped by link/ethernet, which adds and strips the Ethernet
// header): one frame per SOCK_SEQPACKET message each way. Writes go
// straight to the socket from the stack's goroutine, blocking in the
// poller while the NIC's end is full; reads run on the link's own
// goroutine (start), which hands each frame to a handler.
type frameLink struct {
	f   *os.File
	mtu uint32
	mac tcpip.LinkAddress

	// wmu serializes writes, which share one gather buffer: the stack
	// writes from several goroutines.
	wmu  sync.Mutex
	wbuf []byte

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher

	closeOnce sync.Once
	reading   bool          // start has run
	done      chan struct{} // closed when the reader has returned
}

func newFrameLink(fd, mtu int, mac [6]byte) (*frameLink, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	return &frameLink{
		f:    os.NewFile(uintptr(fd), "netdev user stack end"),
		mtu:  uint32(mtu),
		mac:  tcpip.LinkAddress(mac[:]),
		wbuf: make([]byte, netdev.MaxFrame),
		done: make(chan struct{}),
	}, nil
}

// start runs the reader: every frame from the guest goes to handle, which
// must not keep it. The buffer is one MaxFrame allocation for the link's
// life; a longer message is truncated by the socket and then dropped by
// the stack as malformed.
func (l *frameLink) start(handle func(frame []byte)) {
	l.reading = true
	go func() {
		defer close(l.done)
		buf := make([]byte, netdev.MaxFrame)
		for {
			n, err := l.f.Read(buf)
			if err != nil {
				return // closed by Close, or EOF: the NIC's end went away
			}
			if n > 0 {
				handle(buf[:n])
			}
		}
	}()
}

// inject passes one Ethernet frame to the stack (a copy: the stack keeps
// packets past the call, in reassembly and receive queues).
func (l *frameLink) inject(frame []byte) {
	l.dmu.RLock()
	d := l.dispatcher
	l.dmu.RUnlock()
	if d == nil {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	d.DeliverNetworkPacket(0, pkt) // ethernet.Endpoint reads the EtherType
	pkt.DecRef()
}

// writeFrame sends one complete frame to the NIC's end.
func (l *frameLink) writeFrame(frame []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_, err := l.f.Write(frame)
	return err
}

// WritePackets implements stack.LinkWriter.
func (l *frameLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	for i, pkt := range pkts.AsSlice() {
		n := 0
		for _, s := range pkt.AsSlices() {
			if n+len(s) > len(l.wbuf) {
				return i, &tcpip.ErrMessageTooLong{}
			}
			n += copy(l.wbuf[n:], s)
		}
		if _, err := l.f.Write(l.wbuf[:n]); err != nil {
			if i == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return i, nil
		}
	}
	return pkts.Len(), nil
}

// MTU implements stack.NetworkLinkEndpoint.
func (l *frameLink) MTU() uint32 { return l.mtu }

// SetMTU implements stack.NetworkLinkEndpoint.
func (l *frameLink) SetMTU(mtu uint32) { l.mtu = mtu }

// MaxHeaderLength implements stack.NetworkLinkEndpoint: the Ethernet
// header is the wrapper's.
func (*frameLink) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint.
func (l *frameLink) LinkAddress() tcpip.LinkAddress { return l.mac }

// SetLinkAddress implements stack.NetworkLinkEndpoint.
func (l *frameLink) SetLinkAddress(a tcpip.LinkAddress) { l.mac = a }

// Capabilities implements stack.NetworkLinkEndpoint: none, so the stack
// checks the guest's checksums and computes its own.
func (*frameLink) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach implements stack.NetworkLinkEndpoint.
func (l *frameLink) Attach(d stack.NetworkDispatcher) {
	l.dmu.Lock()
	l.dispatcher = d
	l.dmu.Unlock()
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (l *frameLink) IsAttached() bool {
	l.dmu.RLock()
	defer l.dmu.RUnlock()
	return l.dispatcher != nil
}

// Wait implements stack.NetworkLinkEndpoint: the reader has ended once
// Close has returned.
func (*frameLink) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint (the Ethernet
// wrapper reports its own).
func (*frameLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint.
func (*frameLink) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint.
func (*frameLink) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (*frameLink) SetOnCloseAction(func()) {}

// Close implements stack.NetworkLinkEndpoint (the stack calls it when it
// closes, User.Close before that): the socket closes, and the reader, if
// started, has returned when Close does.
func (l *frameLink) Close() {
	l.closeOnce.Do(func() {
		l.f.Close()
		if l.reading {
			<-l.done
		}
	})
}
