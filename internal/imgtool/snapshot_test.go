package imgtool

import (
	"bytes"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/block"
)

// The snapshot table as Debian's qemu-img 7.2 prints it: a QEMU savevm
// (727 KiB of VM state, 0.492 s of VM clock, no icount recorded) and a
// qemu-img snapshot -c (no state, icount 0). The first two rows are
// copied from `qemu-img snapshot -l` on such an image; the third follows
// the same format string (bdrv_snapshot_dump) past 100 hours.
func TestSnapshotTableLikeQemuImg(t *testing.T) {
	date := time.Date(2026, 12, 2, 17, 18, 3, 0, time.Local)
	var b bytes.Buffer
	printSnapshotTable(&b, []block.SnapshotInfo{
		{ID: "1", Name: "qtag", VMStateSize: 744581, Date: date, VMClock: 492_654_321 * time.Nanosecond, ICount: -1},
		{ID: "2", Name: "disk", Date: date, ICount: 0},
		{ID: "3", Name: "long", VMStateSize: 3 << 30, Date: date, VMClock: 100*time.Hour + 2*time.Minute + 3*time.Second + 4*time.Millisecond, ICount: 12345},
	})
	want := "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"1         qtag              727 KiB 2026-12-02 17:18:03 00:00:00.492           \n" +
		"2         disk                  0 B 2026-12-02 17:18:03 00:00:00.000          0\n" +
		"3         long                3 GiB 2026-12-02 17:18:03100:02:03.004      12345\n" // %13s: no gap, as in QEMU
	if b.String() != want {
		t.Fatalf("snapshot table:\n%q\nwant\n%q", b.String(), want)
	}
}
