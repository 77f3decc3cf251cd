package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// rawSnapEntry is a snapshot table entry kept as raw fields, so tests can
// write entries the engine itself never would.
type rawSnapEntry struct {
	fixed    [40]byte
	extra    []byte
	id, name []byte
}

func readRawSnapTable(t *testing.T, b []byte) []rawSnapEntry {
	t.Helper()
	be := binary.BigEndian
	nb, p := be.Uint32(b[60:]), int(be.Uint64(b[64:]))
	var out []rawSnapEntry
	for range nb {
		var e rawSnapEntry
		copy(e.fixed[:], b[p:])
		idl, nl, el := int(be.Uint16(b[p+12:])), int(be.Uint16(b[p+14:])), int(be.Uint32(b[p+36:]))
		q := p + 40
		e.extra = append([]byte(nil), b[q:q+el]...)
		e.id = append([]byte(nil), b[q+el:q+el+idl]...)
		e.name = append([]byte(nil), b[q+el+idl:q+el+idl+nl]...)
		p = (q + el + idl + nl + 7) &^ 7
		out = append(out, e)
	}
	return out
}

// writeRawSnapTable writes the entries where the table starts (the caller
// keeps them within the table's clusters).
func writeRawSnapTable(t *testing.T, b []byte, ents []rawSnapEntry) {
	t.Helper()
	be := binary.BigEndian
	p := int(be.Uint64(b[64:]))
	for _, e := range ents {
		be.PutUint32(e.fixed[36:], uint32(len(e.extra)))
		copy(b[p:], e.fixed[:])
		q := p + 40
		q += copy(b[q:], e.extra)
		q += copy(b[q:], e.id)
		q += copy(b[q:], e.name)
		p = (q + 7) &^ 7
	}
}

type qemuCheckJSON struct {
	Corruptions int `json:"corruptions"`
	Leaks       int `json:"leaks"`
	CheckErrors int `json:"check-errors"`
}

func qemuCheckResult(t *testing.T, path string) qemuCheckJSON {
	t.Helper()
	out, _ := exec.Command("qemu-img", "check", "--output=json", path).Output()
	var r qemuCheckJSON
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
	return r
}

// snapshotData applies a snapshot to a copy of path with qemu-img and
// returns the disk content, or nil when qemu-img cannot apply it.
func snapshotData(t *testing.T, path, name string) []byte {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "apply.qcow2")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "snapshot", "-a", name, cp).CombinedOutput(); err != nil {
		t.Logf("qemu-img snapshot -a %s: %v %s", name, err, out)
		return nil
	}
	return qemuRaw(t, cp)
}

// TestRepairBadSnapshotEntry breaks one snapshot table entry in the ways
// iotests 261 and 080 do and repairs the image once with qemu-img check -r
// all and once with the engine. The engine's repair must leave qemu-img
// check no worse than qemu-img's own repair, and every snapshot qemu-img
// can apply after its repair must apply after ours with the same data
// (the other snapshots' clusters must not have been freed and reused).
func TestRepairBadSnapshotEntry(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	for i := 1; i <= 3; i++ {
		qemuIO(t, base, "qcow2", fmt.Sprintf("write -P %d 0 64k", i), fmt.Sprintf("write -P %d %dk 64k", i+10, i*128))
		run(t, "qemu-img", "snapshot", "-c", fmt.Sprintf("s%d", i), base)
	}
	qemuIO(t, base, "qcow2", "write -P 9 0 64k")
	orig, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, s := range []string{"s1", "s2", "s3"} {
		want[s] = snapshotData(t, base, s)
	}
	cases := []struct {
		name   string
		mutate func(e *rawSnapEntry)
	}{
		{"v3_no_extra", func(e *rawSnapEntry) { e.extra = nil }},
		{"v3_8_bytes_extra", func(e *rawSnapEntry) { e.extra = e.extra[:8] }},
		{"too_much_extra", func(e *rawSnapEntry) { e.extra = append(e.extra, make([]byte, 2000)...) }},
		{"l1_misaligned", func(e *rawSnapEntry) {
			binary.BigEndian.PutUint64(e.fixed[0:], binary.BigEndian.Uint64(e.fixed[0:])+0x200)
		}},
		{"l1_too_large", func(e *rawSnapEntry) { binary.BigEndian.PutUint32(e.fixed[8:], 0x10000000) }},
		{"l1_beyond_eof", func(e *rawSnapEntry) { binary.BigEndian.PutUint64(e.fixed[0:], 0x7fff0000) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			ents := readRawSnapTable(t, b)
			c.mutate(&ents[1])
			writeRawSnapTable(t, b, ents)
			d := t.TempDir()
			theirs, ours := filepath.Join(d, "qemu.qcow2"), filepath.Join(d, "petrel.qcow2")
			for _, p := range []string{theirs, ours} {
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			exec.Command("qemu-img", "check", "-r", "all", theirs).Run()
			img, err := Open(ours, block.Options{Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := img.Check(block.RepairAll)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("repair: %+v\n%v", res, res.Messages)
			// qemu-img's repair keeps entries whose L1 table is invalid
			// (and still reports them); ours drops them, so the image is clean.
			q, p := qemuCheckResult(t, theirs), qemuCheckResult(t, ours)
			if p.Corruptions > q.Corruptions || p.Leaks > q.Leaks || p.CheckErrors > q.CheckErrors || p != (qemuCheckJSON{}) {
				human, _ := exec.Command("qemu-img", "check", ours).CombinedOutput()
				t.Fatalf("after repair qemu-img check says %+v, after its own repair %+v:\n%s", p, q, human)
			}
			// Use the repaired image: new allocations must not land on
			// clusters the snapshots still hold.
			img, err = Open(ours, block.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"s1", "s2", "s3"} {
				theirData := snapshotData(t, theirs, s)
				if theirData == nil || (s == "s2" && strings.HasPrefix(c.name, "l1_")) {
					continue // unusable, deleted by our repair
				}
				if s != "s2" {
					assertEqual(t, "snapshot "+s+" after qemu-img's repair", theirData, want[s])
				}
				assertEqual(t, "snapshot "+s+" after repair", snapshotData(t, ours, s), theirData)
			}
		})
	}
}

// TestSnapshotCreateKeepsV2DiskSize: version 2 entries may lack the disk
// size (iotest 261's template); a missing size means the current one.
// Creating a snapshot rewrites the table, and must not write disk_size 0
// into those entries, after which qemu-img cannot apply them.
func TestSnapshotCreateKeepsV2DiskSize(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "v2.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path, "4M")
	for i := 1; i <= 3; i++ {
		qemuIO(t, path, "qcow2", fmt.Sprintf("write -P %d 0 64k", i))
		run(t, "qemu-img", "snapshot", "-c", fmt.Sprintf("s%d", i), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ents := readRawSnapTable(t, b)
	ents[0].extra = nil               // no extra data at all
	ents[2].extra = ents[2].extra[:8] // VM state size only
	writeRawSnapTable(t, b, ents)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.CreateSnapshot("s4"); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	for i := 1; i <= 3; i++ {
		got := snapshotData(t, path, fmt.Sprintf("s%d", i))
		if got == nil {
			t.Fatalf("qemu-img cannot apply s%d after a snapshot was created", i)
		}
		assertEqual(t, fmt.Sprintf("snapshot s%d", i), got[:64<<10], bytes.Repeat([]byte{byte(i)}, 64<<10))
	}
}
