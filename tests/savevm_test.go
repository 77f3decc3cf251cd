//go:build amd64

package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// petrelProc is one `petrel run` process with its serial console on
// stdout (collected) and stdin (written by the test).
type petrelProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan error
}

func startPetrel(t testing.TB, bin string, args ...string) *petrelProc {
	t.Helper()
	p := &petrelProc{cmd: exec.Command(bin, append([]string{"run"}, args...)...), done: make(chan error, 1)}
	return p.start(t)
}

// start runs p.cmd with stdin a pipe and stdout and stderr collected; the
// process is killed at the end of the test.
func (p *petrelProc) start(t testing.TB) *petrelProc {
	t.Helper()
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{w: &p.out, mu: &p.mu}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		io.Copy(&lockedWriter{w: &p.out, mu: &p.mu}, stdout)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	return p
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *petrelProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// await waits until re matches the output, the process ends, or timeout.
func (p *petrelProc) await(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("petrel exited (%v) before %q; output:\n%s", err, re, indent(p.output()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q after %v; output:\n%s", re, timeout, indent(p.output()))
	return nil
}

func hmp(t testing.TB, mon *goqmp.SocketMonitor, line string) string {
	t.Helper()
	cmd, _ := json.Marshal(map[string]any{"execute": "human-monitor-command", "arguments": map[string]string{"command-line": line}})
	raw, err := mon.Run(cmd)
	if err != nil {
		t.Fatalf("HMP %q: %v", line, err)
	}
	var r struct{ Return string }
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("HMP %q: reply %s: %v", line, raw, err)
	}
	return r.Return
}

func connectQMP(t testing.TB, sock string) *goqmp.SocketMonitor {
	t.Helper()
	var mon *goqmp.SocketMonitor
	var err error
	for i := 0; i < 200; i++ {
		if mon, err = goqmp.NewSocketMonitor("unix", sock, 5*time.Second); err == nil {
			if err = mon.Connect(); err == nil {
				t.Cleanup(func() { mon.Disconnect() })
				return mon
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("connecting to QMP at %s: %v", sock, err)
	return nil
}

var tickRE = regexp.MustCompile(`TICK (\d+) count=(\d+)\n`)

// lastTick is the last complete TICK line in out.
func lastTick(out string) (tick, count uint64) {
	all := tickRE.FindAllStringSubmatch(out, -1)
	if len(all) == 0 {
		return 0, 0
	}
	m := all[len(all)-1]
	tick, _ = strconv.ParseUint(m[1], 10, 64)
	count, _ = strconv.ParseUint(m[2], 10, 64)
	return tick, count
}

// TestSaveVMKillLoadVM is the proof with a guest program: a guest
// counting in a register and in RAM, writing to its virtio disk, with an
// interrupt pending in its LAPIC, is saved with HMP savevm over QMP (from
// go-qemu, a client written elsewhere); the process is killed; a new
// `petrel run -loadvm` carries on from the next tick with the same count,
// the same device registers (the guest checks a fingerprint of them every
// tick), the pending interrupt delivered once, and the disk as it was at
// the save. qemu-img lists the snapshot with its VM size and checks the
// image clean.
func TestSaveVMKillLoadVM(t *testing.T) {
	testutil.NeedKVM(t)
	qemuImg := testutil.NeedTool(t, "qemu-img")
	elf := guest.Build(t, "saved_guest.c")
	bin := buildPetrel(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command(bin, "img", "create", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("img create: %v\n%s", err, out)
	}
	args := func(sock string, extra ...string) []string {
		return append([]string{"-m", "64M", "-kernel", elf, "-append", "ticklen=262144", "-disk", img,
			"-serial", "stdio", "-qmp", "unix:" + sock + ",server,wait=off"}, extra...)
	}
	wait := testutil.Timeout(60 * time.Second)

	sock1 := filepath.Join(dir, "qmp1.sock")
	p1 := startPetrel(t, bin, args(sock1)...)
	p1.await(t, regexp.MustCompile(`TICK 3 `), wait)
	mon := connectQMP(t, sock1)
	if _, err := mon.Run([]byte(`{"execute":"stop"}`)); err != nil {
		t.Fatal(err)
	}
	if out := hmp(t, mon, "savevm s1"); out != "" {
		t.Fatalf("savevm printed %q", out)
	}
	saved := p1.output()
	savedTick, savedCount := lastTick(saved)
	if savedTick < 3 || savedCount == 0 {
		t.Fatalf("no tick before the save:\n%s", indent(saved))
	}
	// The guest runs on after the save (cont), writing the disk more; then
	// the process dies without closing anything.
	if _, err := mon.Run([]byte(`{"execute":"cont"}`)); err != nil {
		t.Fatal(err)
	}
	p1.await(t, regexp.MustCompile(fmt.Sprintf(`TICK %d `, savedTick+3)), wait)
	p1.cmd.Process.Signal(syscall.SIGKILL)
	<-p1.done
	t.Logf("first process: saved at tick %d count %d", savedTick, savedCount)

	out, err := exec.Command(qemuImg, "snapshot", "-l", img).CombinedOutput()
	t.Logf("qemu-img snapshot -l:\n%s", out)
	if err != nil || !regexp.MustCompile(`(?m)^1\s+s1\s+[0-9.]+ [KM]iB `).Match(out) {
		t.Fatalf("qemu-img does not list s1 with a VM size: %v", err)
	}
	// A SIGKILL while the guest writes may leak clusters (exit status 3:
	// refcounts above the references), never corrupt.
	qemuImgCheck(t, qemuImg, img, "after the kill", true)

	sock2 := filepath.Join(dir, "qmp2.sock")
	p2 := startPetrel(t, bin, args(sock2, "-loadvm", "s1")...)
	// What the first process had printed at the save, followed by what the
	// loaded guest prints, must read as one run of ticks: the loaded guest
	// may first finish a line the save cut in half.
	p2.await(t, regexp.MustCompile(fmt.Sprintf(`TICK %d `, savedTick+2)), wait)
	all := tickRE.FindAllStringSubmatch(saved+p2.output(), -1)
	for i, m := range all {
		if got, want := m[1]+" "+m[2], fmt.Sprintf("%d %d", i+1, uint64(i+1)*262144); got != want {
			t.Fatalf("across the save and the load, tick line %d reads %q, want %q (saved at tick %d; loaded output:\n%s)",
				i+1, got, want, savedTick, indent(p2.output()))
		}
	}
	if _, err := io.WriteString(p2.stdin, "g"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p2.done:
		if err != nil {
			t.Fatalf("petrel -loadvm exited: %v\n%s", err, indent(p2.output()))
		}
	case <-time.After(wait):
		t.Fatalf("the loaded guest did not finish:\n%s", indent(p2.output()))
	}
	o2 := p2.output()
	t.Logf("second process:\n%s", indent(lastLines(o2, 8)))
	for _, want := range []string{"PENDING-IRQ-OK", "DISK-OK", "RESULT PASS"} {
		if !strings.Contains(o2, want) {
			t.Fatalf("loaded guest did not print %s", want)
		}
	}
	if strings.Contains(o2, "READY") {
		t.Fatal("the loaded guest booted again instead of continuing")
	}
	qemuImgCheck(t, qemuImg, img, "after the load", true)
}

// qemuImgCheck runs qemu-img check on img: clean, or with leaks only when
// leaksOK (qemu-img's exit status 3).
func qemuImgCheck(t testing.TB, qemuImg, img, when string, leaksOK bool) {
	t.Helper()
	out, err := exec.Command(qemuImg, "check", img).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case leaksOK && errors.As(err, &ee) && ee.ExitCode() == 3:
		t.Logf("qemu-img check %s: leaks only:\n%s", when, out)
	default:
		t.Fatalf("qemu-img check %s: %v\n%s", when, err, out)
	}
}

func lastLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
