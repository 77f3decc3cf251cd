//go:build amd64

package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/tests/guest"
	"github.com/petrel-vmm/petrel/vmm"
)

// BenchmarkSaveVM times HMP savevm and loadvm (over QMP, from the command
// until its reply) of a 512 MiB guest that has touched 128 MiB (touch.c),
// in `petrel run` and in QEMU on the same KVM (TCG where QEMU cannot use
// it), and reports the VM state's size in the image as qemu-img lists it
// and how much the image file grew. Each figure is the minimum over
// SAVEVM_REPEAT (3) rounds in one process; scripts/bench-savevm.sh prints
// them side by side with the ratios.
func BenchmarkSaveVM(b *testing.B) {
	testutil.NeedKVM(b)
	qemu := testutil.NeedTool(b, "qemu-system-x86_64")
	qemuImg := testutil.NeedTool(b, "qemu-img")
	elf := guest.Build(b, "touch.c")
	bin := buildPetrel(b)
	repeat := 3
	if s := os.Getenv("SAVEVM_REPEAT"); s != "" {
		repeat, _ = strconv.Atoi(s)
	}
	for _, vmm := range []string{"petrel", "qemu"} {
		b.Run(vmm, func(b *testing.B) {
			dir := b.TempDir()
			img := filepath.Join(dir, "disk.qcow2")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
				b.Fatalf("qemu-img create: %v\n%s", err, out)
			}
			sock := filepath.Join(dir, "qmp.sock")
			var p *petrelProc
			if vmm == "petrel" {
				p = startPetrel(b, bin, "-m", "512M", "-kernel", elf, "-append", "mib=128", "-disk", img,
					"-serial", "stdio", "-qmp", "unix:"+sock+",server,wait=off")
			} else {
				p = startQEMUForSaveVM(b, qemu, elf, img, sock)
			}
			p.await(b, regexp.MustCompile(`READY touched=128 MiB`), testutil.Timeout(120*time.Second))
			mon := connectQMP(b, sock)
			if _, err := mon.Run([]byte(`{"execute":"stop"}`)); err != nil {
				b.Fatal(err)
			}
			before := allocated(b, img)
			save, load := time.Duration(1<<62), time.Duration(1<<62)
			for i := 0; i < repeat; i++ {
				tag := fmt.Sprintf("s%d", i)
				t0 := time.Now()
				if out := hmp(b, mon, "savevm "+tag); out != "" {
					b.Fatalf("%s savevm: %q", vmm, out)
				}
				save = min(save, time.Since(t0))
				t0 = time.Now()
				if out := hmp(b, mon, "loadvm "+tag); out != "" {
					b.Fatalf("%s loadvm: %q", vmm, out)
				}
				load = min(load, time.Since(t0))
			}
			grew := allocated(b, img) - before
			out, err := exec.Command(qemuImg, "snapshot", "-U", "-l", img).CombinedOutput()
			if err != nil {
				b.Fatalf("qemu-img snapshot -l: %v\n%s", err, out)
			}
			b.Logf("%s: qemu-img snapshot -l:\n%s", vmm, out)
			vmSize := regexp.MustCompile(`(?m)^1\s+s0\s+(\S+ \S+)`).FindSubmatch(out)
			if vmSize == nil {
				b.Fatalf("%s: no snapshot s0 listed", vmm)
			}
			b.ReportMetric(float64(save.Microseconds())/1000, "save-ms")
			b.ReportMetric(float64(load.Microseconds())/1000, "load-ms")
			b.ReportMetric(float64(grew)/float64(repeat)/(1<<20), "MiB-written/save")
			fmt.Printf("SAVEVM %s save_ms=%.1f load_ms=%.1f vm_size=%q image_growth_mib_per_save=%.1f\n", vmm,
				float64(save.Microseconds())/1000, float64(load.Microseconds())/1000, string(vmSize[1]),
				float64(grew)/float64(repeat)/(1<<20))
			mon.Run([]byte(`{"execute":"quit"}`))
			<-p.done
		})
	}
}

// startQEMUForSaveVM runs the guest in QEMU's pc machine with the disk on
// virtio-blk: on KVM when /dev/kvm serves QEMU (on kvm_pvm with the CPU
// features it lacks turned off), else on TCG.
func startQEMUForSaveVM(b *testing.B, qemu, elf, img, sock string) *petrelProc {
	accel, cpu := "kvm", "host"
	if vmm.DetectPVM() {
		cpu = "host,-arch-capabilities,-cx16,-xsave"
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		accel, cpu = "tcg", "max"
	}
	b.Logf("QEMU on %s, -cpu %s", accel, cpu)
	args := []string{"-machine", "pc,accel=" + accel, "-cpu", cpu, "-m", "512M", "-display", "none", "-nodefaults",
		"-serial", "stdio", "-kernel", elf, "-append", "mib=128",
		"-drive", "file=" + img + ",if=virtio,format=qcow2", "-qmp", "unix:" + sock + ",server=on,wait=off"}
	p := &petrelProc{cmd: exec.Command(qemu, args...), done: make(chan error, 1)}
	return p.start(b)
}

// allocated is the disk space the file takes.
func allocated(b *testing.B, path string) int64 {
	out, err := exec.Command("stat", "-c", "%b %B", path).Output()
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(out))
	n, _ := strconv.ParseInt(f[0], 10, 64)
	u, _ := strconv.ParseInt(f[1], 10, 64)
	return n * u
}
