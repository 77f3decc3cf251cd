//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

func testMem(t *testing.T, size uint64) *guestmem.Memory {
	t.Helper()
	m := guestmem.New()
	if err := m.Add(0, make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestE820(t *testing.T) {
	m, err := e820Map(512 << 20)
	if err != nil {
		t.Fatal(err)
	}
	want := []E820Entry{
		{0, 0x9fc00, E820RAM},
		{0x9fc00, 0x100000 - 0x9fc00, E820Reserved},
		{0x100000, 512<<20 - 0x100000, E820RAM},
		{0xfc000000, 0x4000000, E820Reserved},
	}
	if len(m) != len(want) {
		t.Fatalf("e820 %+v", m)
	}
	for i := range want {
		if m[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, m[i], want[i])
		}
	}
	// 5 GiB: 3 GiB low, 2 GiB from 4 GiB.
	m, _ = e820Map(5 << 30)
	if m[2].Size != 3<<30-0x100000 || m[4] != (E820Entry{4 << 30, 2 << 30, E820RAM}) {
		t.Fatalf("5 GiB e820 %+v", m)
	}
	if _, err := e820Map(1 << 20); err == nil {
		t.Fatal("1 MiB guest accepted")
	}
	low, high := ramLayout(3 << 30)
	if low != 3<<30 || high != 0 {
		t.Fatalf("3 GiB split %#x %#x", low, high)
	}
}

func TestBootParamsLayout(t *testing.T) {
	mem := testMem(t, 64<<20)
	e820, _ := e820Map(64 << 20)
	k := fakeBzImage(longModePM())
	initrd := bytes.Repeat([]byte{0xab}, 10000)
	bi, err := loadKernel(mem, bootInput{kernel: k, initrd: initrd, cmdline: "root=/dev/vda", e820: e820,
		rsdp: 0xe0000, lowEnd: 64 << 20, protocol: BootAuto})
	if err != nil {
		t.Fatal(err)
	}
	if bi.protocol != BootLinux64 || bi.entry != 0x100200 || bi.param != zeroPageAddr {
		t.Fatalf("boot info %+v (a fake payload has no PVH note: auto must fall back)", bi)
	}
	bp := make([]byte, 4096)
	mem.Read(zeroPageAddr, bp)
	le := binary.LittleEndian
	if string(bp[0x202:0x206]) != "HdrS" || le.Uint16(bp[0x206:]) != 0x020f {
		t.Fatal("setup header not copied")
	}
	if bp[0x210] != 0xff || bp[0x211]&0x81 != 0x81 {
		t.Fatalf("type_of_loader %#x loadflags %#x", bp[0x210], bp[0x211])
	}
	if le.Uint16(bp[0x1fa:]) != 0xffff {
		t.Fatal("vid_mode not NORMAL")
	}
	cmd := le.Uint32(bp[0x228:])
	got := make([]byte, 14)
	mem.Read(uint64(cmd), got)
	if string(got) != "root=/dev/vda\x00" {
		t.Fatalf("cmdline at %#x = %q", cmd, got)
	}
	rd, rs := le.Uint32(bp[0x218:]), le.Uint32(bp[0x21c:])
	if rs != 10000 || rd&0xfff != 0 || uint64(rd)+uint64(rs) > 64<<20 || rd < 0x100000+uint32(len(longModePM())) {
		t.Fatalf("initrd at %#x+%d", rd, rs)
	}
	if b, _ := mem.Slice(uint64(rd), 10000); !bytes.Equal(b, initrd) {
		t.Fatal("initrd bytes differ")
	}
	if le.Uint64(bp[0x070:]) != 0xe0000 {
		t.Fatal("acpi_rsdp_addr not set")
	}
	if int(bp[0x1e8]) != len(e820) {
		t.Fatalf("e820_entries %d", bp[0x1e8])
	}
	for i, e := range e820 {
		o := 0x2d0 + 20*i
		if le.Uint64(bp[o:]) != e.Addr || le.Uint64(bp[o+8:]) != e.Size || le.Uint32(bp[o+16:]) != e.Type {
			t.Fatalf("e820 entry %d in boot_params wrong", i)
		}
	}
	code := make([]byte, len(longModeCmdlineGuest))
	mem.Read(0x100200, code)
	if !bytes.Equal(code, longModeCmdlineGuest) {
		t.Fatal("protected-mode code not at 1 MiB")
	}
}

func TestBootRejectsBadKernels(t *testing.T) {
	mem := testMem(t, 16<<20)
	e820, _ := e820Map(16 << 20)
	in := bootInput{e820: e820, lowEnd: 16 << 20}
	old := fakeBzImage(longModePM())
	binary.LittleEndian.PutUint16(old[0x236:], 0) // no 64-bit entry
	big := fakeBzImage(longModePM())
	binary.LittleEndian.PutUint32(big[0x260:], 64<<20) // init_size beyond RAM
	noNote := pvhELF([]byte{0xf4}, 0x100000)
	noNote[64+56] = 0 // PT_NOTE -> PT_NULL
	low := pvhELF([]byte{0xf4}, 0x1000)
	for name, k := range map[string][]byte{
		"empty": nil, "garbage": []byte("not a kernel at all, just text"), "no 64-bit entry": old,
		"init_size too big": big, "elf without pvh note": noNote, "segment below 1 MiB": low,
		"beyond ram": pvhELF([]byte{0xf4}, 0x2000000),
	} {
		in.kernel = k
		if _, err := loadKernel(mem, in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	in.kernel = pvhELF([]byte{0xf4}, 0x100000)
	in.protocol = BootLinux64
	if _, err := loadKernel(mem, in); err == nil {
		t.Error("linux64 boot of an ELF accepted")
	}
	in.protocol = BootAuto
	in.initrd = make([]byte, 20<<20)
	if _, err := loadKernel(mem, in); err == nil {
		t.Error("initrd larger than RAM accepted")
	}
	in.initrd = nil
	in.cmdline = string(make([]byte, cmdlineMax))
	if _, err := loadKernel(mem, in); err == nil {
		t.Error("oversized command line accepted")
	}
}

func TestPVHStartInfo(t *testing.T) {
	mem := testMem(t, 32<<20)
	e820, _ := e820Map(32 << 20)
	initrd := []byte("initrd-bytes")
	bi, err := loadKernel(mem, bootInput{kernel: pvhELF([]byte{0xf4}, 0x200000), initrd: initrd,
		cmdline: "quiet", e820: e820, rsdp: 0xf0000, lowEnd: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if bi.protocol != BootPVH || bi.entry != 0x200000 || bi.param != pvhStartInfo {
		t.Fatalf("boot info %+v", bi)
	}
	u32 := func(a uint64) uint32 { v, _ := mem.Uint32(a); return v }
	u64 := func(a uint64) uint64 { v, _ := mem.Uint64(a); return v }
	si := uint64(pvhStartInfo)
	if u32(si) != hvmStartMagic || u32(si+4) != 1 || u32(si+12) != 1 || u64(si+32) != 0xf0000 {
		t.Fatal("hvm_start_info header wrong")
	}
	if n := u32(si + 48); n != uint32(len(e820)) {
		t.Fatalf("memmap_entries %d", n)
	}
	mm := u64(si + 40)
	if u64(mm+24*2) != 0x100000 || u32(mm+24*2+16) != E820RAM {
		t.Fatal("memmap entry 2 wrong")
	}
	mod := u64(si + 16)
	if u64(mod+8) != uint64(len(initrd)) {
		t.Fatal("module size wrong")
	}
	got := make([]byte, len(initrd))
	mem.Read(u64(mod), got)
	if string(got) != string(initrd) {
		t.Fatal("initrd module bytes differ")
	}
	cl := make([]byte, 6)
	mem.Read(u64(si+24), cl)
	if string(cl) != "quiet\x00" {
		t.Fatalf("cmdline %q", cl)
	}
	// The segment's bss is zeroed.
	if b, _ := mem.Slice(0x200001, 0x1000); !bytes.Equal(b, make([]byte, 0x1000)) {
		t.Fatal("bss not zeroed")
	}
}

func TestInitrdAbovePrefAddress(t *testing.T) {
	mem := testMem(t, 64<<20)
	e820, _ := e820Map(64 << 20)
	k := fakeBzImage(longModePM())
	binary.LittleEndian.PutUint64(k[0x258:], 16<<20) // pref_address
	binary.LittleEndian.PutUint32(k[0x260:], 40<<20) // init_size: up to 56 MiB
	in := bootInput{kernel: k, initrd: make([]byte, 4<<20), e820: e820, lowEnd: 64 << 20, protocol: BootLinux64}
	if _, err := loadKernel(mem, in); err != nil {
		t.Fatal(err)
	}
	rd, _ := mem.Uint32(zeroPageAddr + 0x218)
	if rd < 56<<20 {
		t.Fatalf("initrd at %#x overlaps the kernel's decompressed image (16 MiB + 40 MiB)", rd)
	}
	in.initrd = make([]byte, 10<<20) // cannot fit above 56 MiB in 64 MiB
	if _, err := loadKernel(mem, in); err == nil {
		t.Fatal("initrd overlapping the relocated kernel accepted")
	}
}

// TestAutoBootNeverFallsBackOnFailure: BootAuto takes the 64-bit protocol
// for a bzImage PVH cannot boot (no PVH note: the reason is kept for -v),
// but a failure on the PVH path (here the kernel file cannot be read for
// the decompressed-kernel cache) is an error, not a silent change of path.
func TestAutoBootNeverFallsBackOnFailure(t *testing.T) {
	mem := testMem(t, 16<<20)
	e820, _ := e820Map(16 << 20)
	dir := t.TempDir()
	kpath := filepath.Join(dir, "bzImage")
	bz := fakeBzImage(longModePM())
	if err := os.WriteFile(kpath, bz, 0o644); err != nil {
		t.Fatal(err)
	}
	in := bootInput{kernel: bz, e820: e820, lowEnd: 16 << 20, kernelPath: kpath, cacheDir: filepath.Join(dir, "cache")}
	b, err := loadKernel(mem, in)
	if err != nil || b.protocol != BootLinux64 || b.whyNotPVH == nil {
		t.Fatalf("bzImage without a PVH payload: protocol %v, why %v, err %v; want linux64 with the reason", b.protocol, b.whyNotPVH, err)
	}
	in.kernelPath = filepath.Join(dir, "vanished")
	if b, err := loadKernel(mem, in); err == nil {
		t.Fatalf("unreadable kernel file: booted by %v instead of failing", b.protocol)
	}
}

// TestKernelReadOnlyAsFarAsNeeded: a bzImage file larger than
// kernelHeadSize is read only up to it (readKernelHead); when PVH cannot
// boot it, the 64-bit protocol reads the whole file and the protected-mode
// code lands whole at 1 MiB. An ELF vmlinux is always read whole.
func TestKernelReadOnlyAsFarAsNeeded(t *testing.T) {
	dir := t.TempDir()
	// The fake's payload is pm's last 8 bytes (fakeBzImage): the padding
	// goes first.
	pm := make([]byte, 2*kernelHeadSize)
	for i := range pm {
		pm[i] = byte(i * 7)
	}
	pm = append(pm, longModePM()...)
	bz := fakeBzImage(pm)
	kpath := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kpath, bz, 0o644); err != nil {
		t.Fatal(err)
	}
	head, whole, err := readKernelHead(kpath)
	if err != nil || whole || len(head) != kernelHeadSize || !bytes.Equal(head, bz[:kernelHeadSize]) {
		t.Fatalf("readKernelHead of a %d-byte bzImage: %d bytes, whole %v, err %v; want its first %d bytes",
			len(bz), len(head), whole, err, kernelHeadSize)
	}
	mem := testMem(t, 16<<20)
	e820, _ := e820Map(16 << 20)
	in := bootInput{kernel: head, kernelHead: true, e820: e820, lowEnd: 16 << 20, kernelPath: kpath,
		cacheDir: filepath.Join(dir, "cache")}
	b, err := loadKernel(mem, in)
	if err != nil || b.protocol != BootLinux64 || b.whyNotPVH == nil {
		t.Fatalf("head of a bzImage without a PVH payload: protocol %v, why %v, err %v; want linux64", b.protocol, b.whyNotPVH, err)
	}
	got := make([]byte, len(pm))
	if err := mem.Read(0x100000, got); err != nil || !bytes.Equal(got, pm) {
		t.Fatalf("protected-mode code at 1 MiB differs from the file's (err %v)", err)
	}
	elfKernel := append(pvhELF([]byte{0xf4}, 0x100000), make([]byte, kernelHeadSize)...)
	epath := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(epath, elfKernel, 0o644); err != nil {
		t.Fatal(err)
	}
	if k, whole, err := readKernelHead(epath); err != nil || !whole || !bytes.Equal(k, elfKernel) {
		t.Fatalf("readKernelHead of an ELF: %d of %d bytes, whole %v, err %v", len(k), len(elfKernel), whole, err)
	}
}
