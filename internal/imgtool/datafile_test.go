package imgtool

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestDataFileAsQemuImg: petrel img and qemu-img, each on its own image
// with an external data file (plain and raw), print the same Formatting
// line, info (but the disk size), map in both outputs after the same
// qemu-io writes, and the same refusals of internal snapshots and
// compressed clusters (iotest 244's messages).
func TestDataFileAsQemuImg(t *testing.T) {
	qemuImg := testutil.NeedTool(t, "qemu-img")
	diskSize := regexp.MustCompile(`(?m)^disk size: .*\n`)
	for _, raw := range []string{"off", "on"} {
		dir := t.TempDir()
		var out [2][]string
		for i, tool := range []string{"qemu", "petrel"} {
			// The same names in both outputs: each tool's files are
			// DIR/t.qcow2 and DIR/t.data, DIR a directory of its own.
			sub := filepath.Join(dir, tool)
			img, data := filepath.Join(sub, "t.qcow2"), filepath.Join(sub, "t.data")
			qemuTool(t, "mkdir", "-p", sub)
			args := []string{"create", "-f", "qcow2", "-o", "data_file=" + data + ",data_file_raw=" + raw + ",extent_size_hint=0", img, "4M"}
			do := func(a ...string) string {
				if tool == "qemu" {
					o, _ := exec.Command(qemuImg, a...).CombinedOutput()
					return strings.ReplaceAll(string(o), "qemu-img: ", "")
				}
				_, o, e := pimg(a...)
				return o + strings.ReplaceAll(e, "petrel img: ", "")
			}
			out[i] = append(out[i], strings.ReplaceAll(do(args...), sub, "DIR"))
			qemuTool(t, "qemu-io", "-c", "write -P 0x11 0 128k", "-c", "write -z 1M 192k", "-c", "discard 2M 64k", img)
			for _, a := range [][]string{
				{"info", img}, {"map", img}, {"map", "--output=json", img}, {"check", img},
				{"snapshot", "-c", "s", img},
				{"convert", "-c", "-O", "qcow2", "-o", "data_file=" + filepath.Join(sub, "c.data"), img, filepath.Join(sub, "c.qcow2")},
			} {
				out[i] = append(out[i], strings.ReplaceAll(diskSize.ReplaceAllString(do(a...), ""), sub, "DIR"))
			}
		}
		for j := range out[0] {
			if out[0][j] != out[1][j] {
				t.Errorf("data_file_raw=%s, step %d:\nqemu-img:\n%s\npetrel img:\n%s", raw, j, out[0][j], out[1][j])
			}
		}
	}
}
