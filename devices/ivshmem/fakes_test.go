package ivshmem

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem/server"
	"github.com/petrel-vmm/petrel/devices/pci"
	"golang.org/x/sys/unix"
)

// These stand in for the KVM VM, which unit tests do not create; the
// whole-VM tests in tests/ use the real one.

// line records INTA# levels.
type line struct {
	mu     sync.Mutex
	level  bool
	raises int
}

func (l *line) SetLevel(a bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a && !l.level {
		l.raises++
	}
	l.level = a
}

func (l *line) get() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level, l.raises
}

// signaler records injected MSIs.
type signaler struct {
	mu   sync.Mutex
	msis []string
}

func (s *signaler) SignalMSI(addr uint64, data uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msis = append(s.msis, fmt.Sprintf("%#x:%#x", addr, data))
	return nil
}

func (s *signaler) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msis...)
}

// router records KVM registrations and checks each fd is open when it is
// registered and removed (KVM needs the fd to find the eventfd).
type router struct {
	t        *testing.T
	mu       sync.Mutex
	ioevents map[string]int // "addr/match" -> fd
	irqfds   map[uint32]int // gsi -> fd
	routes   map[uint32]string
	nextGSI  uint32
}

func newRouter(t *testing.T) *router {
	return &router{t: t, ioevents: map[string]int{}, irqfds: map[uint32]int{}, routes: map[uint32]string{}, nextGSI: 24}
}

func (r *router) checkOpen(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		r.t.Errorf("fd %d is not open: %v", fd, err)
		return err
	}
	return nil
}

func ioKey(addr uint64, size uint32, m *uint64) string {
	if m == nil {
		return fmt.Sprintf("%#x/%d/any", addr, size)
	}
	return fmt.Sprintf("%#x/%d/%#x", addr, size, *m)
}

func (r *router) AddIoeventfd(fd int, addr uint64, size uint32, pio bool, m *uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkOpen(fd); err != nil {
		return err
	}
	k := ioKey(addr, size, m)
	if _, dup := r.ioevents[k]; dup {
		r.t.Errorf("ioeventfd %s registered twice", k)
		return unix.EEXIST
	}
	r.ioevents[k] = fd
	return nil
}

func (r *router) RemoveIoeventfd(fd int, addr uint64, size uint32, pio bool, m *uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkOpen(fd); err != nil {
		return err
	}
	k := ioKey(addr, size, m)
	if r.ioevents[k] != fd {
		r.t.Errorf("removing ioeventfd %s fd %d that is not registered", k, fd)
		return unix.ENOENT
	}
	delete(r.ioevents, k)
	return nil
}

func (r *router) AddMSIRoute(addr uint64, data uint32) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.nextGSI
	r.nextGSI++
	r.routes[g] = fmt.Sprintf("%#x:%#x", addr, data)
	return g, nil
}

func (r *router) UpdateMSIRoute(g uint32, addr uint64, data uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[g] = fmt.Sprintf("%#x:%#x", addr, data)
	return nil
}

func (r *router) RemoveMSIRoute(g uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.routes, g)
	return nil
}

func (r *router) AddIrqfd(fd int, g uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkOpen(fd); err != nil {
		return err
	}
	r.irqfds[g] = fd
	return nil
}

func (r *router) RemoveIrqfd(fd int, g uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkOpen(fd); err != nil {
		return err
	}
	if r.irqfds[g] != fd {
		r.t.Errorf("removing irqfd %d on gsi %d that is not registered", fd, g)
	}
	delete(r.irqfds, g)
	return nil
}

func (r *router) counts() (ioevents, irqfds int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ioevents), len(r.irqfds)
}

func (r *router) hasIoevent(addr uint64, match uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := uint64(match)
	_, ok := r.ioevents[ioKey(addr, 4, &m)]
	return ok
}

// host maps nothing; the bus only needs MapBAR to succeed.
type host struct{}

func (host) MapBAR(pci.Mapping) error   { return nil }
func (host) UnmapBAR(pci.Mapping) error { return nil }

// startServer runs an ivshmem server in this process.
func startServer(t testing.TB, vectors int) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "sock")
	s, err := server.New(server.Config{SocketPath: sock, ShmPath: filepath.Join(dir, "shm"), Size: 1 << 16, Vectors: vectors})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return sock
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
