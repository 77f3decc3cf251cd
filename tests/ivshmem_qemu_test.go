//go:build amd64

package tests

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/tests/guest"
)

var (
	ivshmemBinOnce sync.Once
	ivshmemBin     string
	ivshmemBinErr  error
)

// ivshmemPetrel builds cmd/petrel once per test process. It goes to one
// fixed place (built under a private name, then renamed over the old one,
// so a concurrent test run keeps executing its own inode) rather than a
// new temporary directory per run that nothing would remove.
func ivshmemPetrel(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PETREL_BIN"); p != "" {
		return p
	}
	ivshmemBinOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), "petrel-ivshmem-tests")
		if ivshmemBinErr = os.MkdirAll(dir, 0o755); ivshmemBinErr != nil {
			return
		}
		tmp := filepath.Join(dir, fmt.Sprintf("petrel.%d.tmp", os.Getpid()))
		out, err := exec.Command("go", "build", "-o", tmp, "github.com/petrel-vmm/petrel/cmd/petrel").CombinedOutput()
		if err != nil {
			os.Remove(tmp)
			ivshmemBinErr = fmt.Errorf("building petrel: %v\n%s", err, out)
			return
		}
		ivshmemBin = filepath.Join(dir, "petrel")
		ivshmemBinErr = os.Rename(tmp, ivshmemBin)
	})
	if ivshmemBinErr != nil {
		t.Fatal(ivshmemBinErr)
	}
	return ivshmemBin
}

// ivshmemServerProc runs `petrel ivshmem-server` on a fresh socket and shm
// object; it returns the socket path and the shm object's path.
func ivshmemServerProc(t *testing.T, size string, vectors int) (sock, shm string) {
	t.Helper()
	bin := ivshmemPetrel(t)
	dir := t.TempDir()
	sock = filepath.Join(dir, "ivshmem.sock")
	name := fmt.Sprintf("petrel-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	shm = "/dev/shm/" + name
	cmd := exec.Command(bin, "ivshmem-server", "-S", sock, "-m", name, "-l", size, "-n", fmt.Sprint(vectors), "-F", "-v", "-p", filepath.Join(dir, "pid"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		os.Remove(shm)
		if err != nil {
			t.Errorf("ivshmem-server exited with %v after SIGTERM", err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ivshmem-server left its socket behind")
		}
	})
	waitFor(t, "ivshmem server socket", func() bool { _, err := os.Stat(sock); return err == nil })
	return sock, shm
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// peerEvents drains a Go peer's server messages into a channel.
func peerEvents(c *proto.Client) <-chan proto.Event {
	ch := make(chan proto.Event, 256)
	go func() {
		defer close(ch)
		for {
			ev, err := c.Next()
			if errors.Is(err, proto.ErrProtocol) {
				continue
			}
			if err != nil {
				return
			}
			ch <- ev
		}
	}()
	return ch
}

func expectEvent(t *testing.T, ch <-chan proto.Event, kind proto.EventKind, peer, vector int) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("server connection closed")
		}
		if ev.Kind != kind || ev.Peer != peer || (kind == proto.VectorAdded && ev.Vector != vector) {
			t.Fatalf("got %+v, want kind %d peer %d vector %d", ev, kind, peer, vector)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no event (want kind %d peer %d)", kind, peer)
	}
}

// qmpCall sends one command on a QMP connection and returns its "return".
func qmpCall(t *testing.T, enc *json.Encoder, dec *json.Decoder, cmd string, args any) json.RawMessage {
	t.Helper()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	if err := enc.Encode(req); err != nil {
		t.Fatal(err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct{ Desc string }
			Event  string
		}
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		if resp.Event != "" {
			continue
		}
		if resp.Error != nil {
			t.Fatalf("QMP %s: %s", cmd, resp.Error.Desc)
		}
		return resp.Return
	}
}

// TestIvshmemServerWithQEMU: QEMU's own ivshmem-doorbell (a client nobody
// here wrote) connects to `petrel ivshmem-server`. QEMU refuses to start
// unless the handshake gives it an ID and the memory; QMP's `info pci` then
// shows BAR2 sized from the fd we sent. A Go peer sees QEMU join with its
// vectors and leave when QEMU is killed.
func TestIvshmemServerWithQEMU(t *testing.T) {
	qemu := testutil.NeedTool(t, "qemu-system-x86_64")
	sock, _ := ivshmemServerProc(t, "1M", 2)

	peer, err := proto.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if peer.ID() != 0 {
		t.Fatalf("Go peer got ID %d, want 0", peer.ID())
	}
	events := peerEvents(peer)
	expectEvent(t, events, proto.VectorAdded, 0, 0)
	expectEvent(t, events, proto.VectorAdded, 0, 1)

	dir := t.TempDir()
	qmpSock := filepath.Join(dir, "qmp.sock")
	q := exec.Command(qemu, "-machine", "accel=tcg", "-S", "-nographic", "-display", "none",
		"-serial", "none", "-monitor", "none", "-nodefaults",
		"-chardev", "socket,path="+sock+",id=ivs",
		"-device", "ivshmem-doorbell,chardev=ivs,vectors=2,id=iv0",
		"-qmp", "unix:"+qmpSock+",server=on,wait=off")
	qout := &syncBuffer{}
	q.Stdout, q.Stderr = qout, qout
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var qerr error
	go func() { qerr = q.Wait(); close(exited) }()
	defer func() {
		q.Process.Kill()
		<-exited
	}()

	// QEMU announces itself to the Go peer: ID 1, two vectors.
	expectEvent(t, events, proto.VectorAdded, 1, 0)
	expectEvent(t, events, proto.VectorAdded, 1, 1)
	if err := peer.Notify(1, 1); err != nil {
		t.Fatalf("ringing QEMU's doorbell: %v", err)
	}

	var conn net.Conn
	waitFor(t, "QEMU's QMP socket", func() bool {
		select {
		case <-exited:
			t.Fatalf("QEMU exited (%v): %s", qerr, qout.String())
		default:
		}
		conn, err = net.Dial("unix", qmpSock)
		return err == nil
	})
	defer conn.Close()
	dec := json.NewDecoder(bufio.NewReader(conn))
	enc := json.NewEncoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		t.Fatal(err)
	}
	qmpCall(t, enc, dec, "qmp_capabilities", nil)
	var pci string
	if err := json.Unmarshal(qmpCall(t, enc, dec, "human-monitor-command", map[string]string{"command-line": "info pci"}), &pci); err != nil {
		t.Fatal(err)
	}
	// 1 MiB from the server: QEMU prints size-1 in brackets.
	re := regexp.MustCompile(`(?s)PCI device 1af4:1110.*?BAR2: 64 bit prefetchable memory at 0x[0-9a-f]+ \[0x000ffffe\]`)
	if !re.MatchString(pci) {
		t.Fatalf("QEMU's ivshmem has no 1 MiB BAR2:\n%s", pci)
	}
	var status struct{ Status string }
	if err := json.Unmarshal(qmpCall(t, enc, dec, "query-status", nil), &status); err != nil || status.Status != "prelaunch" {
		t.Fatalf("QEMU status %q (%v)", status.Status, err)
	}

	q.Process.Kill()
	<-exited
	expectEvent(t, events, proto.PeerLeft, 1, 0)
	if got := peer.Peers(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("Go peer still knows peers %v", got)
	}
}

// petrelRun starts `petrel run` for a guest program; it returns a function
// that waits for the exit and returns the serial output.
func petrelRun(t *testing.T, bin string, args ...string) func() (string, error) {
	t.Helper()
	serial := filepath.Join(t.TempDir(), "serial")
	args = append([]string{"run", "-m", "64M", "-serial", "file:" + serial}, args...)
	cmd := exec.Command(bin, args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return func() (string, error) {
		var err error
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			err = fmt.Errorf("petrel run timed out: %v", <-done)
		}
		out, _ := os.ReadFile(serial)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, stderr.String())
		}
		return string(out), err
	}
}

// TestIvshmemPetrelRunDoorbell is the command-line path end to end: two
// `petrel run` processes with -chardev socket and -device ivshmem-doorbell
// ping-pong through `petrel ivshmem-server`.
func TestIvshmemPetrelRunDoorbell(t *testing.T) {
	testutil.NeedKVM(t)
	bin := ivshmemPetrel(t)
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "pingpong.c"))
	sock, shm := ivshmemServerProc(t, "1M", 1)
	r, err := hostmem.OpenRegion("host", shm, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	binary.LittleEndian.PutUint32(r.Mem, ivshmemHostMagic)
	dev := []string{"-chardev", "socket,id=ivs,path=" + sock, "-device", "ivshmem-doorbell,chardev=ivs,vectors=1,addr=0x4"}
	waitA := petrelRun(t, bin, append([]string{"-kernel", elf, "-append", "role=a mode=msix rounds=20"}, dev...)...)
	waitB := petrelRun(t, bin, append([]string{"-kernel", elf, "-append", "role=b mode=msix rounds=20"}, dev...)...)
	// Collect both guests' output before judging either, so a failure
	// shows what the other side saw.
	outs, errs := map[string]string{}, map[string]error{}
	for _, g := range []struct {
		name string
		wait func() (string, error)
	}{{"A", waitA}, {"B", waitB}} {
		outs[g.name], errs[g.name] = g.wait()
		t.Logf("guest %s:\n%s", g.name, indent(outs[g.name]))
	}
	for _, name := range []string{"A", "B"} {
		if errs[name] != nil {
			t.Fatalf("guest %s: %v", name, errs[name])
		}
		if res := resultLine(outs[name]); res != "RESULT PASS" {
			t.Fatalf("guest %s: %q", name, res)
		}
	}
	if got := binary.LittleEndian.Uint32(r.Mem[0x108:]); got != 0xb0b0600d {
		t.Fatalf("host sees ack %#x", got)
	}
}

// TestIvshmemPetrelRunPlain: -object memory-backend-file,share=on and
// -device ivshmem-plain map the file into the guest; the guest's writes
// are in the file. A missing server makes ivshmem-doorbell fail cleanly.
func TestIvshmemPetrelRunPlain(t *testing.T) {
	testutil.NeedKVM(t)
	bin := ivshmemPetrel(t)
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "plain.c"))
	file := filepath.Join(t.TempDir(), "shared")
	r, err := hostmem.OpenRegion("host", file, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	binary.LittleEndian.PutUint32(r.Mem, ivshmemHostMagic)
	out, err := petrelRun(t, bin, "-kernel", elf,
		"-object", "memory-backend-file,id=m0,share=on,mem-path="+file+",size=64K",
		"-device", "ivshmem-plain,memdev=m0,id=iv0")()
	t.Logf("guest:\n%s", indent(out))
	if err != nil {
		t.Fatal(err)
	}
	if res := resultLine(out); res != "RESULT PASS" {
		t.Fatalf("guest: %q", res)
	}
	for i := 0; i < 1024; i++ {
		if got := binary.LittleEndian.Uint32(r.Mem[0x2000+4*i:]); got != 0x5a5a0000+uint32(i) {
			t.Fatalf("file word %d = %#x", i, got)
		}
	}
	// The object exists with another size: refused with a clear message.
	_, err = petrelRun(t, bin, "-kernel", elf,
		"-object", "memory-backend-file,id=m0,share=on,mem-path="+file+",size=128K",
		"-device", "ivshmem-plain,memdev=m0")()
	if err == nil || !strings.Contains(err.Error(), "exists with 65536 bytes") {
		t.Fatalf("size mismatch: %v", err)
	}
	_, err = petrelRun(t, bin, "-kernel", elf,
		"-chardev", "socket,id=c,path="+filepath.Join(t.TempDir(), "nobody"),
		"-device", "ivshmem-doorbell,chardev=c")()
	if err == nil || !strings.Contains(err.Error(), "connecting to ivshmem server") {
		t.Fatalf("no server: %v", err)
	}
}

// TestIvshmemPetrelGuestWithQEMUGuest: a guest in QEMU (TCG, QEMU's own
// ivshmem-doorbell device, which nobody here wrote) and a guest in
// `petrel run` share memory through `petrel ivshmem-server` and ring each
// other's doorbells: Petrel's pattern reaches the QEMU guest, QEMU's ack
// and its doorbells reach the Petrel guest.
func TestIvshmemPetrelGuestWithQEMUGuest(t *testing.T) {
	testutil.NeedKVM(t)
	qemu := testutil.NeedTool(t, "qemu-system-x86_64")
	bin := ivshmemPetrel(t)
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "pingpong.c"))
	sock, shm := ivshmemServerProc(t, "1M", 1)
	r, err := hostmem.OpenRegion("host", shm, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	binary.LittleEndian.PutUint32(r.Mem, ivshmemHostMagic)

	qserial := filepath.Join(t.TempDir(), "qemu.serial")
	q := exec.Command(qemu, "-machine", "q35,accel=tcg", "-m", "128", "-display", "none",
		"-no-reboot", "-nodefaults", "-serial", "file:"+qserial, "-kernel", elf,
		"-append", "role=b mode=msix rounds=5",
		"-chardev", "socket,path="+sock+",id=ivs", "-device", "ivshmem-doorbell,chardev=ivs,vectors=1")
	qout := &syncBuffer{}
	q.Stdout, q.Stderr = qout, qout
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	qdone := make(chan error, 1)
	go func() { qdone <- q.Wait() }()
	defer q.Process.Kill()

	wait := petrelRun(t, bin, "-kernel", elf, "-append", "role=a mode=msix rounds=5",
		"-chardev", "socket,id=ivs,path="+sock, "-device", "ivshmem-doorbell,chardev=ivs")
	out, err := wait()
	t.Logf("Petrel guest:\n%s", indent(out))
	if err != nil {
		t.Fatal(err)
	}
	if res := resultLine(out); res != "RESULT PASS" {
		t.Fatalf("Petrel guest: %q", res)
	}
	select {
	case err = <-qdone:
	case <-time.After(60 * time.Second):
		t.Fatal("QEMU did not power off")
	}
	qs, _ := os.ReadFile(qserial)
	t.Logf("QEMU guest:\n%s", indent(string(qs)))
	if err != nil {
		t.Fatalf("QEMU: %v: %s", err, qout.String())
	}
	if res := resultLine(string(qs)); res != "RESULT PASS" {
		t.Fatalf("QEMU guest: %q", res)
	}
	if got := binary.LittleEndian.Uint32(r.Mem[0x108:]); got != 0xb0b0600d {
		t.Fatalf("host sees ack %#x", got)
	}
}
