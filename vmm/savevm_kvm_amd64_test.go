package vmm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/tests/guest"
	"github.com/petrel-vmm/petrel/vmstate"
)

// The savevm guest's ports and RAM words (tests/guest/progs/savevm.c).
const (
	svPortReady    = 0x510
	svPortProgress = 0x511
	svPortOpen     = 0x512
	svPortDone     = 0x513
	svCOM1         = 0x3f8
	svPM1aCnt      = 0x604
	svCounter      = 0x2000
	svFinish       = 0x2008
	svStepMask     = 0x200c
	svStep         = 256 // the guest reports when count&(svStep-1) == 0
	svPin          = 5   // IOAPIC pin the host asserts (level, vector 0x55)
	svPinVector    = 0x55
	svTimerVector  = 0x60
	svGDT          = 0x1000
	svRAMSize      = 16 << 20
)

type svReport struct {
	port uint16
	val  uint32
}

// svMachine is a one-vCPU VM built as machine/pc builds one (irqchip with
// the PICs masked, PIT, CPUID), with the savevm guest's report ports, a
// COM1 that collects its output and the ACPI PM1a_CNT it powers off
// through on its PIO bus.
type svMachine struct {
	vm  *VM
	v   *VCPU
	ram []byte

	mu       sync.Mutex
	reports  []svReport
	serial   strings.Builder
	stopAt   uint32 // kick the vCPU when it reports this count
	finishAt uint32 // set FINISH once it reports this count or more
	progress chan uint32
}

func newSVMachine(t *testing.T, k *KVM) *svMachine {
	t.Helper()
	vm, err := k.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	m := &svMachine{vm: vm, progress: make(chan uint32, 1<<16)}
	t.Cleanup(func() { m.close() })
	vm.SetTSSAddr(0xfffbd000)
	vm.SetIdentityMapAddr(0xfffbc000)
	for _, f := range []func() error{vm.CreateIRQChip, vm.MaskPIC, vm.CreatePIT2} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if m.ram, err = AllocGuestRAM(svRAMSize); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.AddMemory(0, m.ram, false); err != nil {
		t.Fatal(err)
	}
	if m.v, err = vm.CreateVCPU(0); err != nil {
		t.Fatal(err)
	}
	host, err := k.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.v.SetCPUID(GuestCPUID(host, 0, CPUIDConfig{CPUs: 1, PVM: k.PVM})); err != nil {
		t.Fatal(err)
	}
	m.v.PIO = &Bus{}
	for _, r := range [][2]uint64{{svPortReady, 0x10}, {svCOM1, 8}, {svPM1aCnt, 2}} {
		if err := m.v.PIO.Insert(r[0], r[1], m); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *svMachine) close() {
	if m.v != nil {
		m.v.Close()
		m.v = nil
	}
	if m.vm != nil {
		m.vm.Close()
		m.vm = nil
	}
	if m.ram != nil {
		FreeGuestRAM(m.ram)
		m.ram = nil
	}
}

func (m *svMachine) Read(base, off uint64, data []byte) {
	clear(data)
	if base+off == svCOM1+5 {
		data[0] = 0x60 // LSR: transmitter empty
	}
}

// Write takes a report (on the vCPU thread). It plays the host's part:
// it asserts pin 5 on READY and deasserts it on OPEN.
func (m *svMachine) Write(base, off uint64, data []byte) {
	var b [4]byte
	copy(b[:], data)
	r := svReport{uint16(base + off), binary.LittleEndian.Uint32(b[:])}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case r.port == svCOM1:
		m.serial.WriteByte(data[0])
		return
	case base == svCOM1:
		return
	}
	m.reports = append(m.reports, r)
	switch r.port {
	case svPortReady:
		m.vm.SetIRQLevel(svPin, true)
	case svPortOpen:
		m.vm.SetIRQLevel(svPin, false)
	case svPortProgress:
		if r.val == m.stopAt {
			m.v.Kick(StopRequested)
		}
		if m.finishAt != 0 && r.val >= m.finishAt {
			binary.LittleEndian.PutUint32(m.ram[svFinish:], 1)
		}
		select {
		case m.progress <- r.val:
		default:
		}
	case svPM1aCnt:
		m.v.Kick(StopRequested)
	}
}

func (m *svMachine) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.serial.String()
}

func (m *svMachine) takeReports() []svReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.reports
	m.reports = nil
	return r
}

// boot loads the guest's ELF and puts the vCPU at its PVH entry as
// machine/pc does: 32-bit flat protected mode (pc's boot GDT), paging off;
// no hvm_start_info (%ebx = 0). It also puts a pattern in the XMM
// registers (through KVM: the guest never touches them), which must come
// through the XSAVE area.
func (m *svMachine) boot(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Paddr+p.Memsz > uint64(len(m.ram)) || p.Filesz > p.Memsz {
			t.Fatalf("segment at %#x+%#x does not fit", p.Paddr, p.Memsz)
		}
		if _, err := p.ReadAt(m.ram[p.Paddr:p.Paddr+p.Filesz], 0); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range []uint64{0, 0, 0x00cf9b000000ffff, 0x00cf93000000ffff, 0x008b00000000ffff} {
		binary.LittleEndian.PutUint64(m.ram[svGDT+8*i:], d)
	}
	binary.LittleEndian.PutUint32(m.ram[svStepMask:], svStep-1)
	s, err := m.v.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	code := Segment{Limit: 0xffffffff, Selector: 0x10, Typ: 11, Present: 1, DB: 1, S: 1, G: 1}
	data := Segment{Limit: 0xffffffff, Selector: 0x18, Typ: 3, Present: 1, DB: 1, S: 1, G: 1}
	s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
	s.TR = Segment{Limit: 0xffff, Selector: 0x20, Typ: 11, Present: 1}
	s.GDT = Descriptor{Base: svGDT, Limit: 39}
	s.CR0 = 1 | 1<<4 | 1<<5 // PE, ET, NE
	if err := m.v.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := m.v.SetRegs(&Regs{RIP: f.Entry, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	// MTRRdefType: enabled, fixed ranges on, write-back (the MTRRs are
	// not in KVM's MSR list: saved by name).
	e := msrEntry{NMSRs: 1, Index: 0x2ff, Data: 0xc06}
	if n, err := ioctlPtr(m.v.fd, ioctlSetMSRs, &e); err != nil || n != 1 {
		t.Fatalf("setting MTRRdefType: %d, %v", n, err)
	}
	x, err := m.v.getPart(vcpuParts[4])
	if err != nil {
		t.Fatalf("KVM_GET_XSAVE: %v", err)
	}
	copy(x[160:416], xmmPattern())
	binary.LittleEndian.PutUint64(x[512:], binary.LittleEndian.Uint64(x[512:])|3) // XSTATE_BV: x87, SSE
	if err := m.v.setPart("xsave", x); err != nil {
		t.Fatal(err)
	}
}

func xmmPattern() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(0xa0 ^ i)
	}
	return b
}

// start runs the vCPU on its own goroutine; the channel gets its stop.
func (m *svMachine) start() chan Stop {
	ch := make(chan Stop, 1)
	go func() { ch <- m.v.Run() }()
	return ch
}

func waitStop(t *testing.T, ch chan Stop, m *svMachine) {
	t.Helper()
	select {
	case s := <-ch:
		if s != StopRequested {
			t.Fatalf("vcpu stopped: %v (%v), reports %x, output %q", s, m.v.Err(), m.takeReports(), m.output())
		}
	case <-time.After(testutil.Timeout(120 * time.Second)):
		m.v.Kick(StopRequested)
		<-ch
		t.Fatalf("the guest did not get there: reports %x, output %q", m.takeReports(), m.output())
	}
}

// save writes the machine as savevm would: the irqchip, the vCPU, the
// kvmclock and the RAM, in one stream.
func (m *svMachine) save(t *testing.T, msrs []uint32) ([]byte, *VCPUState, *IRQChipState, *ClockState) {
	t.Helper()
	chips, err := m.vm.SaveIRQChips()
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := m.v.SaveFullState(msrs)
	if err != nil {
		t.Fatal(err)
	}
	clk, err := m.vm.SaveClock()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := vmstate.NewWriter(&buf)
	for _, s := range []struct {
		name string
		st   vmstate.Stater
	}{{"irqchip", chips}, {"cpu/0", cpu}, {"kvmclock", clk}} {
		var e vmstate.Enc
		s.st.SaveState(&e)
		w.Section(s.name, 1, e.Data())
	}
	if _, err := vmstate.WriteRAM(w, []vmstate.RAMRegion{{GuestAddr: 0, Mem: m.ram}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), cpu, chips, clk
}

// load reads a stream into a freshly built machine and restores it in
// the order loadvm must use: irqchip, vCPUs, kvmclock.
func (m *svMachine) load(t *testing.T, b []byte) *VCPUState {
	t.Helper()
	if err := vmstate.Verify(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	r, err := vmstate.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	chips, cpu, clk := new(IRQChipState), new(VCPUState), new(ClockState)
	states := map[string]vmstate.Stater{"irqchip": chips, "cpu/0": cpu, "kvmclock": clk}
	for {
		name, ver, _, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if name == "" {
			break
		}
		if name == vmstate.RAMSection {
			if err := vmstate.ReadRAM(r, ver, []vmstate.RAMRegion{{GuestAddr: 0, Mem: m.ram}}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p, err := r.Section()
		if err != nil {
			t.Fatal(err)
		}
		if err := states[name].LoadState(vmstate.NewDec(name, p)); err != nil {
			t.Fatal(err)
		}
		delete(states, name)
	}
	if len(states) != 0 {
		t.Fatalf("sections missing: %v", states)
	}
	if err := m.vm.RestoreIRQChips(chips); err != nil {
		t.Fatal(err)
	}
	back, err := m.vm.SaveIRQChips()
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range irqChipNames {
		if back.chips[i] != chips.chips[i] {
			t.Errorf("%s read back differs from the saved state:\n got %x\nwant %x", name, back.chips[i].Chip, chips.chips[i].Chip)
		}
	}
	if err := m.v.RestoreState(cpu); err != nil {
		t.Fatal(err)
	}
	if err := m.vm.RestoreClock(clk); err != nil {
		t.Fatal(err)
	}
	return cpu
}

// checkRestored compares what the new vCPU holds with what was saved.
func checkRestored(t *testing.T, m *svMachine, saved *VCPUState, savedClock uint64) {
	t.Helper()
	for _, name := range []string{"regs", "sregs", "lapic", "mp state", "xcrs", "debug registers"} {
		var p vcpuPart
		for _, q := range vcpuParts {
			if q.name == name {
				p = q
			}
		}
		got, err := m.v.getPart(p)
		if err != nil {
			t.Fatalf("reading %s back: %v", name, err)
		}
		want := saved.parts[name]
		if name == "lapic" {
			// The timer's current count (0x390) is recomputed on read.
			got, want = append([]byte(nil), got...), append([]byte(nil), want...)
			clear(got[0x390:0x394])
			clear(want[0x390:0x394])
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s read back differs from the saved state:\n got %x\nwant %x", name, got, want)
		}
	}
	fpu, err := m.v.getPart(vcpuParts[3])
	if err != nil || !bytes.Equal(fpu[152:408], xmmPattern()) {
		t.Errorf("XMM registers after the restore: %x (%v)", fpu[152:408], err)
	}
	// Every MSR reads back as saved, but the counters of time, which may
	// have run on since the restore by less than a minute: the TSC (at up
	// to 10 GHz) and Hyper-V's VP_RUNTIME and TIME_REF_COUNT (100 ns
	// units; KVM lists them whether or not the guest sees Hyper-V).
	runsOn := map[uint32]uint64{msrTSC: 600e9, 0x40000010: 600e6, 0x40000020: 600e6}
	mtrr := false
	for _, s := range saved.msrs {
		e := msrEntry{NMSRs: 1, Index: s.Index}
		if n, err := ioctlPtr(m.v.fd, ioctlGetMSRs, &e); err != nil || n != 1 {
			t.Fatalf("reading MSR %#x: %v", s.Index, err)
		}
		if d, ok := runsOn[s.Index]; ok && (e.Data-s.Data > d) || !ok && e.Data != s.Data {
			t.Errorf("MSR %#x after the restore %#x, saved %#x", s.Index, e.Data, s.Data)
		}
		mtrr = mtrr || s.Index == 0x2ff && s.Data == 0xc06
	}
	if !mtrr {
		t.Error("MTRRdefType is not in the saved state")
	}
	if c, err := m.vm.SaveClock(); err != nil || c.present && (c.Nanoseconds() < savedClock || c.Nanoseconds()-savedClock > 60e9) {
		t.Errorf("kvmclock after the restore %v (%v), saved %d", c, err, savedClock)
	}
}

// TestSaveRestoreVM: a guest counting in a register and in RAM, with two
// interrupts held pending by the LAPIC's task priority (a LAPIC timer and
// a level IOAPIC line the host holds asserted), is stopped right at one of
// its port writes and saved (vCPU, irqchip, kvmclock, RAM: one vmstate
// stream); that VM is closed, a new one built and the stream loaded into
// it; the guest counts on from the exact count, is paused (as savevm
// pauses) at an arbitrary point and saved again, restored into a third
// VM, and when told to finish takes both interrupts, once each, only then.
func TestSaveRestoreVM(t *testing.T) {
	testutil.NeedKVM(t)
	prog := guest.Build(t, "savevm.c")
	k, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	msrs, err := k.MSRIndexList()
	if err != nil {
		t.Fatal(err)
	}
	var progress []uint32
	take := func(m *svMachine) []svReport {
		var rest []svReport
		for _, r := range m.takeReports() {
			if r.port == svPortProgress {
				progress = append(progress, r.val)
			} else {
				rest = append(rest, r)
			}
		}
		return rest
	}
	regsField := func(s *VCPUState, i int) uint64 { return binary.LittleEndian.Uint64(s.parts["regs"][8*i:]) }
	const rsi, rip = 4, 16 // struct kvm_regs

	// First machine: stopped (a kick from the port handler) at the
	// progress report of count p1, with that OUT pending in KVM.
	const p1 = 64 * svStep
	m1 := newSVMachine(t, k)
	m1.stopAt = p1
	m1.boot(t, prog)
	waitStop(t, m1.start(), m1)
	stateA, cpuA, chipsA, clockA := m1.save(t, msrs)
	if r := take(m1); len(r) != 1 || r[0].port != svPortReady || len(progress) == 0 || progress[len(progress)-1] != p1 {
		t.Fatalf("first machine reported %x, progress %v, output %q", r, progress, m1.output())
	}
	// movw $0x511, %dx; outl %eax, %dx: the saved RIP is past the OUT.
	out := bytes.Index(m1.ram[:1<<21], []byte{0x66, 0xba, svPortProgress & 0xff, svPortProgress >> 8, 0xef}) + 4
	if regsField(cpuA, rsi) != p1 || regsField(cpuA, rip) != uint64(out)+1 {
		t.Fatalf("saved rsi %d rip %#x, want %d and %#x (the OUT completed)", regsField(cpuA, rsi), regsField(cpuA, rip), p1, out+1)
	}
	if !cpuA.lapicIRR(svTimerVector) || !cpuA.lapicIRR(svPinVector) {
		t.Fatalf("the saved LAPIC lacks the pending vectors %#x and %#x", svTimerVector, svPinVector)
	}
	ioapic := chipsA.chips[2].Chip[:] // struct kvm_ioapic_state: irr at 16, redirtbl at 24
	if binary.LittleEndian.Uint32(ioapic[16:])&(1<<svPin) == 0 || binary.LittleEndian.Uint64(ioapic[24+8*svPin:])&(1<<14) == 0 {
		t.Fatal("the saved IOAPIC lacks pin 5 asserted and awaiting EOI (remote IRR)")
	}
	m1.close()
	t.Logf("state A: %d bytes, stopped at count %d", len(stateA), p1)

	// Second machine: restored from A, it counts on without reporting and
	// is paused (as savevm pauses) wherever it has got to after a while.
	m2 := newSVMachine(t, k)
	cpu2 := m2.load(t, stateA)
	checkRestored(t, m2, cpu2, clockA.Nanoseconds())
	if c := binary.LittleEndian.Uint32(m2.ram[svCounter:]); c != p1 {
		t.Fatalf("RAM counter after the load %d, want %d", c, p1)
	}
	binary.LittleEndian.PutUint32(m2.ram[svStepMask:], 0xffffffff)
	ch := m2.start()
	select {
	case s := <-ch:
		t.Fatalf("second machine stopped: %v (%v), reports %x, output %q", s, m2.v.Err(), m2.takeReports(), m2.output())
	case <-time.After(testutil.Timeout(100 * time.Millisecond)):
	}
	m2.v.Pause()
	stateB, cpuB, _, clockB := m2.save(t, msrs)
	m2.v.Kick(StopRequested)
	waitStop(t, ch, m2)
	if r := take(m2); len(r) != 0 {
		t.Fatalf("second machine reported %x", r)
	}
	countB := regsField(cpuB, rsi)
	if c := binary.LittleEndian.Uint32(m2.ram[svCounter:]); countB <= p1 || uint64(c) != countB && uint64(c) != countB-1 {
		t.Fatalf("paused at count %d (RAM %d), after %d", countB, c, p1)
	}
	m2.close()
	t.Logf("state B: %d bytes, paused at count %d, rip %#x", len(stateB), countB, regsField(cpuB, rip))

	// Third machine: restored from B, told to finish a little later.
	m3 := newSVMachine(t, k)
	cpu3 := m3.load(t, stateB)
	checkRestored(t, m3, cpu3, clockB.Nanoseconds())
	binary.LittleEndian.PutUint32(m3.ram[svStepMask:], svStep-1)
	m3.finishAt = uint32(countB) + 16*svStep
	waitStop(t, m3.start(), m3)
	r := take(m3)
	if len(r) != 3 || r[0].port != svPortOpen || r[1].port != svPortDone || r[2].port != svPM1aCnt ||
		r[0].val != r[1].val || r[0].val < m3.finishAt || !strings.Contains(m3.output(), "RESULT PASS") {
		t.Fatalf("third machine reported %x, output %q; want OPEN and DONE with the count, then power-off", r, m3.output())
	}
	// Every svStep counts reported once: up to p1 on the first machine,
	// from the first multiple after B's count on the third.
	next := uint32(svStep)
	for i, p := range progress {
		if p != next {
			t.Fatalf("progress report %d is %d, want %d (all: %v)", i, p, next, progress)
		}
		next += svStep
		if p == p1 {
			next = (uint32(countB)/svStep + 1) * svStep
		}
	}
	t.Logf("the guest counted to %d across three VMs and took both interrupts after it: %q", r[1].val, m3.output())
}

// A full state's restore fails, naming it, on what the new vCPU or VM
// cannot take: an MSR it refuses, an XSAVE area larger than it holds, a
// PIT it does not have.
func TestRestoreNamesWhatTheHostLacks(t *testing.T) {
	vm := newTestVM(t)
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	s, err := v.SaveFullState([]uint32{msrTSC})
	if err != nil {
		t.Fatal(err)
	}
	s.msrs = append(s.msrs, msrEntry{NMSRs: 1, Index: 0x4b564dff, Data: 1})
	err = v.RestoreState(s)
	if err == nil || !strings.Contains(err.Error(), "MSR 0x4b564dff") {
		t.Errorf("restoring an MSR KVM does not have: %v", err)
	}
	s.msrs = s.msrs[:len(s.msrs)-1]
	big := append(append([]byte(nil), s.parts["xsave"]...), make([]byte, maxXSAVE-len(s.parts["xsave"]))...)
	big[maxXSAVE-1] = 1
	s.parts["xsave"] = big
	if err := v.RestoreState(s); err == nil || !strings.Contains(err.Error(), "restoring xsave") {
		t.Errorf("restoring a 64 KiB XSAVE area with state at its end: %v", err)
	}
	delete(s.parts, "xsave")
	if err := v.RestoreState(s); err != nil {
		t.Errorf("restoring the state saved on this vCPU: %v", err)
	}
	// A reset state skips refused MSRs.
	s.full = false
	s.msrs = append(s.msrs, msrEntry{NMSRs: 1, Index: 0x4b564dff, Data: 1})
	if err := v.RestoreState(s); err != nil {
		t.Errorf("reset state with a refused MSR: %v", err)
	}
	chips, err := vm.SaveIRQChips()
	if err != nil || chips.hasPIT {
		t.Fatalf("irqchips of a VM without a PIT: pit %v, %v", chips.hasPIT, err)
	}
	chips.hasPIT = true
	if err := vm.RestoreIRQChips(chips); err == nil || !strings.Contains(err.Error(), "restoring pit") {
		t.Errorf("restoring a PIT into a VM without one: %v", err)
	}
}
