package testutil

import (
	"bytes"
	"os/exec"
)

// pbkdfFlake is what Debian's qemu-img (7.2) prints when its benchmark of
// PBKDF2 iterations for a new LUKS key slot (qcrypto_pbkdf2_count_iters,
// thread CPU time around a trial run) measures nothing usable: seen on this
// shared machine under load, never for a bad request.
var pbkdfFlake = []byte("Unable to get accurate CPU usage")

// QemuCombinedOutput runs a QEMU tool as exec.Cmd.CombinedOutput does, again
// (up to five tries) while it fails with only that benchmark error.
func QemuCombinedOutput(name string, args ...string) ([]byte, error) {
	for try := 1; ; try++ {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil || try == 5 || !bytes.Contains(out, pbkdfFlake) {
			return out, err
		}
	}
}
