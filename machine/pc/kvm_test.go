//go:build amd64

package pc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/vmm"
)

func runGuest(t *testing.T, cfg Config) (ExitReason, string, error) {
	t.Helper()
	testutil.NeedKVM(t)
	var out bytes.Buffer
	cfg.Serial = &out
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 64
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := m.Run(ctx)
	return r, out.String(), err
}

func TestPVHSerialAndPowerOff(t *testing.T) {
	code := concat(outCOM1('O'), outCOM1('K'), outCOM1('\n'), acpiPowerOff, hlt)
	r, out, err := runGuest(t, Config{KernelBytes: pvhELF(code, 0x100000)})
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	if out != "OK\n" {
		t.Fatalf("serial output %q, want %q", out, "OK\n")
	}
}

func TestTripleFaultIsAnError(t *testing.T) {
	// lidt of a zero-limit IDT, then int 3: no handler -> #GP -> #DF -> triple fault.
	// Loading an empty IDT and dividing by zero does the same with fewer
	// unemulated instructions: xor ecx,ecx; div ecx.
	code := concat([]byte{0x0f, 0x01, 0x1d}, le32(0x100100), []byte{0x31, 0xc9, 0xf7, 0xf1}, hlt)
	code = append(code, make([]byte, 0x100-len(code))...)
	code = append(code, 0, 0, 0, 0, 0, 0) // IDT pseudo-descriptor: limit 0, base 0
	r, _, err := runGuest(t, Config{KernelBytes: pvhELF(code, 0x100000)})
	t.Logf("run: %v, %v", r, err)
	if r != ExitTripleFault || err == nil {
		t.Fatalf("run: %v, %v; want a triple fault error", r, err)
	}
	k, kerr := vmm.Open()
	if kerr != nil {
		t.Fatal(kerr)
	}
	defer k.Close()
	host, kerr := k.SupportedCPUID()
	if kerr != nil {
		t.Fatal(kerr)
	}
	// Intel's registers are the fault's: the dump shows the div at
	// 0x100007. AMD's are KVM's reset state, which the error must not show.
	if vmm.ShutdownResetsVCPU(host, k.PVM) {
		if strings.Contains(err.Error(), "rip=") || !strings.Contains(err.Error(), "not available") {
			t.Fatalf("on AMD the error must say the registers are not available: %v", err)
		}
	} else if !strings.Contains(err.Error(), "rip=") {
		t.Fatalf("error lacks the register dump: %v", err)
	}
}

func TestTripleFaultMessage(t *testing.T) {
	dump := func() string { return "  rip=0x100007" }
	if e := tripleFault(1, false, dump).Error(); !strings.Contains(e, "vcpu 1: triple fault") || !strings.Contains(e, "rip=0x100007") {
		t.Errorf("registers valid: %q", e)
	}
	e := tripleFault(0, true, func() string { t.Error("registers read although KVM reset them"); return "" }).Error()
	if strings.Contains(e, "rip=") || !strings.Contains(e, "not available") || !strings.Contains(e, "AMD") {
		t.Errorf("registers reset: %q", e)
	}
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

func TestLinux64BootProtocol(t *testing.T) {
	const cmdline = "console=ttyS0 petrel=1"
	r, out, err := runGuest(t, Config{KernelBytes: fakeBzImage(longModePM()), Cmdline: cmdline, Boot: BootLinux64})
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	// On a host that forces XSAVE visible (kvm_pvm) a Linux kernel also
	// gets noxsave; the guest must see exactly the line Petrel wrote.
	want := cmdline
	if hostForcesXsave(t) {
		want += " noxsave"
	}
	if out != want {
		t.Fatalf("guest printed %q, want the command line %q", out, want)
	}
}

// hostForcesXsave reports whether this host's KVM overrides Petrel's CPUID
// filter for XSAVE, as kvm_pvm does.
func hostForcesXsave(t *testing.T) bool {
	t.Helper()
	m, err := New(Config{KernelBytes: pvhELF(hlt, 0x100000), MemoryMiB: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return slices.Contains(m.cpus.overrides, "xsave")
}

func TestRepOutsb(t *testing.T) {
	msg := "string I/O works\n"
	code := concat(
		[]byte{0xbe}, le32(0x100100), // mov esi, msg
		[]byte{0xb9}, le32(uint32(len(msg))), // mov ecx, len
		[]byte{0x66, 0xba, 0xf8, 0x03}, // mov dx, 0x3f8
		[]byte{0xf3, 0x6e},             // rep outsb
		acpiPowerOff, hlt)
	code = append(code, make([]byte, 0x100-len(code))...)
	code = append(code, msg...)
	var exits uint64
	testutil.NeedKVM(t)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: pvhELF(code, 0x100000), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Run(context.Background())
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	if out.String() != msg {
		t.Fatalf("serial %q, want %q", out.String(), msg)
	}
	exits = m.VCPUs()[0].IOExits.Load()
	if exits < uint64(len(msg)) {
		t.Fatalf("%d IO exits for %d bytes", exits, len(msg))
	}
}

// seqPort answers each byte read with the next letter.
type seqPort struct{ n byte }

func (p *seqPort) Read(_, _ uint64, data []byte) {
	for i := range data {
		data[i] = 'a' + p.n%26
		p.n++
	}
}
func (p *seqPort) Write(_, _ uint64, _ []byte) {}

// TestRepInsbBatched: KVM batches rep insb into KVM_EXIT_IO with count > 1
// (its read-ahead), and vmm must fill count*size bytes.
func TestRepInsbBatched(t *testing.T) {
	testutil.NeedKVM(t)
	const n = 200
	code := concat(
		[]byte{0xbf}, le32(0x100400), // mov edi, buf
		[]byte{0xb9}, le32(n), // mov ecx, n
		[]byte{0x66, 0xba, 0x00, 0x05}, // mov dx, 0x500
		[]byte{0xfc, 0xf3, 0x6c},       // cld; rep insb
		[]byte{0xbe}, le32(0x100400),   // mov esi, buf
		[]byte{0xb9}, le32(n), // mov ecx, n
		[]byte{0x66, 0xba, 0xf8, 0x03}, // mov dx, 0x3f8
		[]byte{0xf3, 0x6e},             // rep outsb
		acpiPowerOff, hlt)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: pvhELF(code, 0x100000), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.pio.Insert(0x500, 1, &seqPort{}); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Run(context.Background()); err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	var want []byte
	for i := 0; i < n; i++ {
		want = append(want, 'a'+byte(i%26))
	}
	if out.String() != string(want) {
		t.Fatalf("serial %q, want %q", out.String(), want)
	}
	exits := m.VCPUs()[0].IOExits.Load() - n - 1 // minus the outsb bytes and the power-off
	t.Logf("rep insb of %d bytes: %d IO exits", n, exits)
	if exits >= n {
		t.Fatalf("rep insb took %d exits for %d bytes: no count > 1 exit was seen", exits, n)
	}
}

func TestI8042ResetAndNoReboot(t *testing.T) {
	// mov al, 0xfe; out 0x64, al
	code := concat([]byte{0xb0, 0xfe, 0xe6, 0x64}, hlt)
	r, _, err := runGuest(t, Config{KernelBytes: pvhELF(code, 0x100000)})
	if err != nil || r != ExitReset {
		t.Fatalf("run: %v, %v; want reset", r, err)
	}
}

// mmioRec records MMIO writes.
type mmioRec struct {
	off  uint64
	data []byte
}

func (d *mmioRec) Read(_, off uint64, data []byte) {
	for i := range data {
		data[i] = byte(0x40 + i)
	}
}
func (d *mmioRec) Write(_, off uint64, data []byte) {
	d.off, d.data = off, append([]byte(nil), data...)
}

func TestMMIOExits(t *testing.T) {
	testutil.NeedKVM(t)
	code := concat(
		[]byte{0xc7, 0x05}, le32(0xd0000010), le32(0x12345678), // mov dword [0xd0000010], 0x12345678
		[]byte{0xa1}, le32(0xd0000000), // mov eax, [0xd0000000]
		[]byte{0x66, 0xba, 0xf8, 0x03, 0xee}, // out 0x3f8, al
		[]byte{0xa1}, le32(0xe0000000),       // mov eax, [0xe0000000] (unbacked)
		[]byte{0xee},
		acpiPowerOff, hlt)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: pvhELF(code, 0x100000), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dev := &mmioRec{}
	if err := m.MMIO().Insert(0xd0000000, 0x1000, dev); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Run(context.Background()); err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	if dev.off != 0x10 || !bytes.Equal(dev.data, []byte{0x78, 0x56, 0x34, 0x12}) {
		t.Fatalf("mmio write at %#x: %x", dev.off, dev.data)
	}
	if out.String() != "\x40\xff" {
		t.Fatalf("mmio reads gave %x, want 40 ff", out.String())
	}
	if m.VCPUs()[0].MMIOExits.Load() != 3 {
		t.Fatalf("%d MMIO exits, want 3", m.VCPUs()[0].MMIOExits.Load())
	}
}

func TestShutdownStopsASpinningGuest(t *testing.T) {
	testutil.NeedKVM(t)
	// jmp $ at CPL0: the vCPU never exits by itself.
	// Two vCPUs: the AP sits in KVM_RUN waiting for a SIPI, and must be
	// paused and stopped all the same.
	m, err := New(Config{MemoryMiB: 16, CPUs: 2, KernelBytes: pvhELF([]byte{0xeb, 0xfe}, 0x100000)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		m.Pause()
		if m.Status() != "paused" {
			t.Errorf("status %q after Pause", m.Status())
		}
		m.Resume()
		cancel()
	}()
	r, err := m.Run(ctx)
	if err != nil || r != ExitStopped {
		t.Fatalf("run: %v, %v; want stopped", r, err)
	}
	if m.Status() != "shutdown" {
		t.Fatalf("status %q after run", m.Status())
	}
}

func TestNewFailsCleanly(t *testing.T) {
	testutil.NeedKVM(t)
	for name, cfg := range map[string]Config{
		"no kernel":      {MemoryMiB: 16},
		"missing file":   {MemoryMiB: 16, Kernel: "/nonexistent/kernel"},
		"bad kernel":     {MemoryMiB: 16, KernelBytes: []byte("junk")},
		"bad cpu":        {MemoryMiB: 16, KernelBytes: pvhELF(hlt, 0x100000), CPU: "host,+nosuchflag"},
		"tiny memory":    {MemoryMiB: 1, KernelBytes: pvhELF(hlt, 0x100000)},
		"too many cpus":  {CPUs: 1000, KernelBytes: pvhELF(hlt, 0x100000)},
		"missing initrd": {MemoryMiB: 16, KernelBytes: pvhElf(), Initrd: "/nonexistent/initrd"},
		"device kernel":  {MemoryMiB: 16, Kernel: "/dev/zero"},
		"device initrd":  {MemoryMiB: 16, KernelBytes: pvhElf(), Initrd: "/dev/zero"},
	} {
		if m, err := New(cfg); err == nil {
			m.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func pvhElf() []byte { return pvhELF(hlt, 0x100000) }

// residentBound is how much guest RAM the few pages a test wrote may make
// resident: small where a write faults in a 4 KiB page, four 2 MiB pages
// more where transparent huge pages are "always" (Debian's kernels), which
// backs the first write to an aligned 2 MiB range with a whole huge page.
func residentBound(small uint64) uint64 {
	b, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if bytes.Contains(b, []byte("[always]")) {
		return small + 4*(2<<20)
	}
	return small
}

func TestResidentMemoryCountsTouchedGuestPages(t *testing.T) {
	testutil.NeedKVM(t)
	m, err := New(Config{MemoryMiB: 64, KernelBytes: pvhELF(hlt, 0x100000)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, g0, err := m.ram.resident()
	if err != nil {
		t.Fatal(err)
	}
	// Lazily allocated: a 64 MiB guest costs only the pages written so far.
	if g0 > residentBound(1<<20) {
		t.Fatalf("%d KiB of guest RAM resident before the guest ran", g0>>10)
	}
	b, _ := m.mem.Slice(8<<20, 4<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	_, g1, _ := m.ram.resident()
	// Exactly 4 MiB with 4 KiB pages; with huge pages "always" the
	// kernel may also collapse or fault in neighbouring 2 MiB ranges.
	if d := g1 - g0; d < 4<<20 || d > residentBound(4<<20) {
		t.Fatalf("touching 4 MiB raised guest RSS by %d KiB", (g1-g0)>>10)
	}
}

func TestStopAfterCloseIsHarmless(t *testing.T) {
	testutil.NeedKVM(t)
	m, err := New(Config{MemoryMiB: 16, KernelBytes: pvhELF(hlt, 0x100000)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m.Shutdown()
	m.Pause()
	m.Resume()
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSerialInputEcho(t *testing.T) {
	// Poll LSR.DR, read RBR, echo it; 'q' powers off.
	code := concat([]byte{
		0x66, 0xba, 0xfd, 0x03, // loop: mov dx, 0x3fd
		0xec,       // in al, dx
		0xa8, 0x01, // test al, 1
		0x74, 0xf7, // jz loop
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xec,      // in al, dx
		0x3c, 'q', // cmp al, 'q'
		0x74, 0x03, // je done
		0xee,       // out dx, al
		0xeb, 0xeb, // jmp loop
	}, acpiPowerOff, hlt)
	in := strings.Repeat("echo through the UART FIFO; ", 3) + "q"
	r, out, err := runGuest(t, Config{KernelBytes: pvhELF(code, 0x100000), SerialIn: strings.NewReader(in)})
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	if want := strings.TrimSuffix(in, "q"); out != want {
		t.Fatalf("echo %q, want %q", out, want)
	}
}

func TestRAMAbove3GiBStartsAt4GiB(t *testing.T) {
	testutil.NeedKVM(t)
	m, err := New(Config{MemoryMiB: 5 << 10, KernelBytes: pvhELF(hlt, 0x100000)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rs := m.mem.Regions()
	if len(rs) != 2 || rs[0].GPA != 0 || len(rs[0].Host) != 3<<30 || rs[1].GPA != 4<<30 || len(rs[1].Host) != 2<<30 {
		t.Fatalf("regions %d: want [0, 3G) and [4G, 6G)", len(rs))
	}
	if err := m.mem.PutUint64(6<<30-8, 42); err != nil {
		t.Fatalf("last word of RAM: %v", err)
	}
	if _, err := m.mem.Uint64(3 << 30); err == nil {
		t.Fatal("the PCI hole is backed by RAM")
	}
	if _, guest, _ := m.ram.resident(); guest > residentBound(2<<20) {
		t.Fatalf("%d KiB of a 5 GiB guest resident before it ran", guest>>10)
	}
}

// TestKickIsNeverLost stops and pauses spinning guests at arbitrary
// moments (before the vCPU entered KVM_RUN, inside it, between exits);
// every request must take effect.
func TestKickIsNeverLost(t *testing.T) {
	testutil.NeedKVM(t)
	// out 0x80 in a loop: frequent exits, so requests race the exit path,
	// and also land while the guest runs (the 256-step countdown between
	// two exits). With no gap at all, L1 under QEMU TCG (the nested tier)
	// went silent inside this test in about 1 run of 5, its console and
	// the test's own watchdog both (likely: an L2 doing nothing but exit
	// starves L1's own interrupts there).
	code := []byte{
		0xb9, 0x00, 0x01, 0x00, 0x00, // l: mov ecx, 256
		0xff, 0xc9, //                   d: dec ecx
		0x75, 0xfc, //                      jnz d
		0xe6, 0x80, //                      out 0x80, al
		0xeb, 0xf3, //                      jmp l
	}
	// New, Pause and Close have no timeout of their own: a step stuck for
	// 90 s (an iteration takes ~0.2 s nested) ends the test binary with
	// every goroutine's stack, before the nested runner's 300 s of console
	// silence stops L1 (seen: L1 silent inside this test, 1 run in 4).
	var step atomic.Value
	for i := 0; i < 40; i++ {
		step.Store(fmt.Sprintf("iteration %d: New", i))
		watchdog := time.AfterFunc(90*time.Second, func() {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "TestKickIsNeverLost stuck at %s for 90 s; goroutines:\n%s\n", step.Load(), buf)
			os.Exit(2)
		})
		m, err := New(Config{MemoryMiB: 8, CPUs: 2, KernelBytes: pvhELF(code, 0x100000)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan ExitReason, 1)
		go func() { r, _ := m.Run(context.Background()); done <- r }()
		time.Sleep(time.Duration(i%8) * 250 * time.Microsecond)
		if i%2 == 1 {
			step.Store(fmt.Sprintf("iteration %d: Pause/Resume", i))
			m.Pause()
			m.Resume()
		}
		step.Store(fmt.Sprintf("iteration %d: Shutdown", i))
		m.Shutdown()
		select {
		case r := <-done:
			if r != ExitStopped {
				t.Fatalf("iteration %d: %v", i, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: Shutdown was lost; the vCPU is still running", i)
		}
		step.Store(fmt.Sprintf("iteration %d: Close", i))
		m.Close()
		watchdog.Stop()
	}
}
